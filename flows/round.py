"""One bootstrap round as a Prefect flow: generate -> judge -> train -> evaluate -> gate.

Each stage is a task cached on its inputs, its source and the project's code version, with results persisted as
JSON paths. A new run of the same bootstrap therefore skips finished stages, and the stage directories (published
atomically) are the ground truth: a cached path that no longer exists is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from components import report, stages
from components.config import ExperimentConfig
from components.data import generation_backend, load_rows
from components.models import Policy
from registry import lineage
from registry.promotion import decide

ROOT = Path(__file__).resolve().parent.parent


def _code_version() -> str:
    """TASK_SOURCE hashes only the task's own body, so changes in components/ must reach the key another way."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "components").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


CODE_VERSION = _code_version()
CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=lambda *_: CODE_VERSION)
STAGE = {"cache_policy": CACHE, "persist_result": True, "result_serializer": "json"}


@task(**STAGE)
def generate(cfg: ExperimentConfig, champion: Policy, out: str, seed: int) -> str:
    """Sample responses to the training prompts from the champion."""
    return str(stages.generate(cfg, champion, Path(out), seed))


@task(**STAGE)
def judge(cfg: ExperimentConfig, champion: Policy, generations: str, out: str) -> str:
    """Build preference pairs with the training judge."""
    return str(stages.judge(cfg, champion, Path(generations), Path(out)))


@task(**STAGE)
def train(cfg: ExperimentConfig, champion: Policy, generations: str, pairs: str, out: str, seed: int) -> str | None:
    """Train a LoRA adapter (DPO on the pairs, or GRPO/RLOO with the judge as reward); None if nothing to learn."""
    adapter = stages.train(cfg, champion, Path(generations), Path(pairs), Path(out), seed)
    return str(adapter) if adapter else None


@task(**STAGE)
def evaluate(cfg: ExperimentConfig, champion: Policy, challenger: Policy, out: str) -> str:
    """Score challenger vs champion on the held-out cohorts."""
    return str(stages.evaluate(cfg, champion, challenger, Path(out)))


def _run(stage, *args):
    """Call a stage task; if its cached result points at a directory that is gone, recompute it."""
    result = stage(*args)
    if result is not None and not Path(result).exists():
        result = stage.with_options(refresh_cache=True)(*args)
    return result


class Approval(RunInput):
    """The form a reviewer fills in the Prefect UI when a round waits for approval."""

    approve: bool = Field(description="Make this challenger the champion?")
    reviewer: str = Field("", description="Who decided.")
    note: str = Field("", description="Why (kept in MLflow with the decision).")


@flow(name="round", flow_run_name="round-{k}")
def bootstrap_round(
    cfg: ExperimentConfig, k: int, round_dir: str, champion: Policy, tracking: dict, model_name: str, history: list
) -> dict:
    """Run round k against the champion; return the decision, metrics and the next champion.

    `history` holds the earlier rounds' {"k", "metrics"}, for the report's plot over rounds.
    """
    log = get_run_logger()
    out, seed = Path(round_dir), cfg.seed + k
    client = lineage.client_for(tracking["uri"])
    run_id, already_logged = lineage.open_round(
        client, tracking["experiment_id"], tracking["parent_run_id"], tracking["bootstrap_id"], k, str(flow_run.id)
    )

    try:
        adapter = _train_challenger(cfg, k, out, champion, seed)
        if adapter is None:
            log.warning("round %d: every pair abstained; nothing to train, champion kept", k)
            decision = {"promote": False, "reason": "kept: no non-abstained pairs", "deciding_rule": None, "rules": []}
            if not already_logged:
                lineage.log_round(client, tracking["parent_run_id"], run_id, k, {}, out, decision)
                lineage.finish(client, run_id, ok=True)
            return {"k": k, "promote": False, "decision": decision, "metrics": {}, "champion": champion}
        challenger = champion.with_adapter(adapter)
        # --- evaluate: held-out cohorts, judged by a model that did not train the challenger
        _run(evaluate, cfg, champion, challenger, str(out / "eval"))
        metrics = stages.round_metrics(out)
        # --- gate: promote only when every blocking rule holds (and, if configured, a person agrees)
        decision = decide(metrics, cfg.gate.rules).to_dict()
        if not already_logged:
            if decision["promote"] and cfg.gate.require_approval:
                decision = _ask_approval(decision, cfg.gate.approval_timeout)
            log.info("round %d: %s", k, decision["reason"])
            provenance = {"training_judge": cfg.judge.model_dump(mode="json"), "bootstrap_id": tracking["bootstrap_id"]}
            record(tracking, run_id, k, metrics, out, decision, model_name, challenger, provenance)
            _publish_report(cfg, k, out, metrics, decision, history, tracking, run_id)
        return {
            "k": k,
            "promote": decision["promote"],
            "decision": decision,
            "metrics": metrics,
            "champion": challenger if decision["promote"] else champion,
        }
    except BaseException:
        if not already_logged:  # a failed round is FAILED in MLflow, not left RUNNING; a re-run reopens it
            lineage.finish(client, run_id, ok=False)
        raise


def _train_challenger(cfg: ExperimentConfig, k: int, out: Path, champion: Policy, seed: int) -> str | None:
    """Generate, judge and train: the challenger's adapter directory, or None when every pair abstained."""
    # --- generate: n samples per training prompt from the champion
    generations = _run(generate, cfg, champion, str(out / "generations"), seed)
    get_run_logger().info("round %d: sampled with %s", k, generation_backend(Path(generations)))
    # --- judge: one pair per prompt, abstentions kept and counted
    pairs = _run(judge, cfg, champion, generations, str(out / "pairs"))
    # --- train: a fresh LoRA adapter on top of the champion, which is also the reference
    return _run(train, cfg, champion, generations, pairs, str(out / "adapter"), seed)


def _ask_approval(decision: dict, timeout: int) -> dict:
    """Pause until a reviewer submits the Approval form in the Prefect UI; a rejection keeps the champion."""
    get_run_logger().info("gate passed; waiting up to %d s for approval in the Prefect UI (resume this run)", timeout)
    # A timeout raises FlowPauseTimeout: the round's run ends FAILED, and a re-run asks again.
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, poll_interval=5)
    who = answer.reviewer or "a reviewer"
    approval = {"approved": answer.approve, "reviewer": answer.reviewer, "note": answer.note}
    if answer.approve:
        return decision | {"reason": f"{decision['reason']}; approved by {who}", "approval": approval}
    reason = f"rejected by {who}{f': {answer.note}' if answer.note else ''} (gate had passed)"
    return decision | {"promote": False, "reason": reason, "deciding_rule": "human review", "approval": approval}


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def record(
    tracking: dict,
    run_id: str,
    k: int,
    metrics: dict,
    out: Path,
    decision: dict,
    model_name: str,
    challenger: Policy,
    provenance: dict,
) -> None:
    """Metrics, tables and the adapter to MLflow, then the aliases; retried because it is I/O to the store.

    The model version's tags hold the base, the adapter chain, the round and `provenance` (training judge,
    bootstrap id), so a checkpoint leads back to the data and judge that made it.
    """
    client = lineage.client_for(tracking["uri"])
    lineage.log_round(client, tracking["parent_run_id"], run_id, k, metrics, out, decision)
    version = lineage.register_adapter(
        client,
        model_name,
        run_id,
        Path(challenger.adapters[-1]),
        {"base": challenger.base, "adapter_chain": list(challenger.adapters), "round": k} | provenance,
    )
    lineage.set_alias(client, model_name, "challenger", version)
    if decision["promote"]:
        lineage.set_alias(client, model_name, "champion", version)
    lineage.finish(client, run_id, ok=True)


def _publish_report(cfg, k, out, metrics, decision, history, tracking, run_id) -> None:
    """The round report and per-cohort table as Prefect artifacts, with the files kept in MLflow too."""
    slug = artifact_key(tracking["bootstrap_id"])
    links = {"MLflow round run": lineage.run_url(tracking["experiment_id"], run_id)}
    pairs = list(load_rows(out / "pairs"))
    markdown, png = report.round_report(
        f"{cfg.name}: round {k}", metrics, decision, history + [{"k": k, "metrics": metrics}], pairs, links
    )
    publish_report(markdown, png, out / "report", out / "eval", f"{slug}-round-{k}", f"Round {k} report")
    lineage.log_report(lineage.client_for(tracking["uri"]), run_id, out / "report")


def publish_report(markdown: str, png: bytes | None, report_dir: Path, eval_dir: Path, key: str, title: str) -> None:
    """Write the report files, then publish them and the eval's per-cohort table as Prefect artifacts."""
    report.write_report(report_dir, markdown, png)
    create_markdown_artifact(markdown, key=key, description=title)
    cohorts = json.loads((eval_dir / "summary.json").read_text())["cohorts"]
    create_table_artifact(report.cohort_rows(cohorts), key=f"{key}-cohorts", description="Per cohort")


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")

"""One bootstrap round as a Prefect flow: generate -> judge -> train -> evaluate -> gate.

Each stage is a task cached on its inputs, its source and the project's code version, with results persisted as
JSON paths. A new run of the same bootstrap therefore skips finished stages, and the stage directories (published
atomically) are the ground truth: a cached path that no longer exists is recomputed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from components import stages
from components.config import ExperimentConfig
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


@flow(name="round", flow_run_name="round-{k}")
def bootstrap_round(
    cfg: ExperimentConfig, k: int, round_dir: str, champion: Policy, tracking: dict, model_name: str
) -> dict:
    """Run round k against the champion; return the decision, metrics and the next champion."""
    log = get_run_logger()
    out, seed = Path(round_dir), cfg.seed + k
    client = lineage.client_for(tracking["uri"])
    run_id, already_logged = lineage.open_round(
        client, tracking["experiment_id"], tracking["parent_run_id"], tracking["bootstrap_id"], k
    )

    # --- generate: n samples per training prompt from the champion
    generations = _run(generate, cfg, champion, str(out / "generations"), seed)
    # --- judge: one pair per prompt, abstentions kept and counted
    pairs = _run(judge, cfg, champion, generations, str(out / "pairs"))
    # --- train: a fresh LoRA adapter on top of the champion, which is also the reference
    adapter = _run(train, cfg, champion, generations, pairs, str(out / "adapter"), seed)
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
    # --- gate: promote only when every blocking rule holds
    decision = decide(metrics, cfg.gate.rules).to_dict()
    log.info("round %d: %s", k, decision["reason"])
    if not already_logged:
        _record(client, tracking, run_id, k, metrics, out, decision, model_name, challenger)
    return {
        "k": k,
        "promote": decision["promote"],
        "decision": decision,
        "metrics": metrics,
        "champion": challenger if decision["promote"] else champion,
    }


def _record(client, tracking, run_id, k, metrics, out, decision, model_name, challenger: Policy) -> None:
    lineage.log_round(client, tracking["parent_run_id"], run_id, k, metrics, out, decision)
    version = lineage.register_adapter(
        client,
        model_name,
        run_id,
        Path(challenger.adapters[-1]),
        {"base": challenger.base, "adapter_chain": list(challenger.adapters), "round": k},
    )
    lineage.set_alias(client, model_name, "challenger", version)
    if decision["promote"]:
        lineage.set_alias(client, model_name, "champion", version)
    lineage.finish(client, run_id, ok=True)

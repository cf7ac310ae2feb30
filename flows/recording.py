"""What a round writes to MLflow, as Prefect tasks: the gold pairs people labelled, the judges' agreement with them,
the round's metrics, tables, adapter, decision and aliases, and its reward model. Each is retried (I/O to the store)
and idempotent."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components import human_review as review_items
from components import reward_stage, stages
from components.config.experiment import ExperimentConfig
from components.metrics import grouped
from components.models import Policy
from registry import lineage, review, versions
from registry.promotion import Decision


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def snapshot_gold(tracking: lineage.BootstrapRun, out: Path, k: int) -> str:
    """The pairs people have labelled so far, as round k's gold (gold.json), written once: a resumed round trains
    on the same pairs as its first run, and labels added later go to the next round."""
    path = out / "gold.json"
    if not path.exists():
        labelled, _ = trusted_labels(tracking, out.parent, k)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(review_items.gold_pairs(labelled)))
        partial.rename(path)
    return str(path)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def human_agreement(cfg: ExperimentConfig, tracking: lineage.BootstrapRun, out: Path, k: int) -> dict[str, float]:
    """How often the judges agreed with the people who labelled this bootstrap's review queue, so far, and how
    many labels were ignored because no round queued their trace."""
    labelled, ignored = trusted_labels(tracking, out.parent, k)
    agreement = review_items.agreement_metrics(labelled, evaluation_judge_name(cfg))
    return grouped(agreement | {"ignored_labels": float(ignored)})


def trusted_labels(tracking: lineage.BootstrapRun, bootstrap_dir: Path, k: int) -> tuple[list, int]:
    """People's labels on the pairs rounds 1 to k-1 queued (the text and split as the rounds recorded them), and
    how many were ignored: labels on traces of the bootstrap that none of its rounds queued (forged), and, on a team
    stack, labels that no account wrote through its proxy. There each label is credited to the account that wrote it,
    whatever name it is signed with."""
    logger = get_run_logger()
    queued = review_items.queued_by_round(bootstrap_dir)
    forged = review.unqueued_labels(tracking.uri, tracking.experiment_id, tracking.bootstrap_id, set(queued))
    if forged:
        logger.warning(
            "ignored %d label(s) on traces that no round of this bootstrap queued: %s", len(forged), ", ".join(forged)
        )
    earlier = {trace_id: q.item for trace_id, q in queued.items() if q.round < k}
    labels = review.labels_on(tracking.uri, earlier)
    access_log = os.environ.get(review_items.ACCESS_LOG_ENV)
    if not access_log:
        return list(labels.values()), len(forged)
    at = {trace_id: q.at for trace_id, q in queued.items()}
    credited, unwritten = _credit_to_writers(labels, review.label_writers(Path(access_log), at))
    return credited, len(forged) + unwritten


def _credit_to_writers(labels: dict, writers: dict[str, str]) -> tuple[list, int]:
    """The labels an account wrote through the proxy (`writers`: trace id -> account), each credited to that
    account, and how many no account wrote."""
    logger = get_run_logger()
    unwritten = sorted(set(labels) - set(writers))
    if unwritten:
        logger.warning(
            "ignored %d label(s) no account wrote through the proxy: %s", len(unwritten), ", ".join(unwritten)
        )
    credited = []
    for trace_id in sorted(set(labels) & set(writers)):
        verdict, item = labels[trace_id]
        if writers[trace_id] != item.labelled_by:
            logger.warning(
                "the label on %s, signed %r, was written by %r", trace_id, item.labelled_by, writers[trace_id]
            )
        credited.append((verdict, replace(item, labelled_by=writers[trace_id])))
    return credited, len(unwritten)


def evaluation_judge_name(cfg: ExperimentConfig) -> str:
    return f"evaluation:{cfg.evaluation.judge.model}"


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def record(
    cfg: ExperimentConfig,
    k: int,
    tracking: lineage.BootstrapRun,
    run: lineage.RoundRun,
    metrics: dict,
    decision: Decision,
    challenger: Policy | None,
    out: Path,
    generated: stages.Generated,
    previous: str | None,
) -> str | None:
    """Metrics, tables and the adapter to MLflow, the decision and the aliases; retried because it is I/O to the
    store, and idempotent. Returns the champion's registered version after this round (None: the base model)."""
    version = None
    if not run.logged:
        lineage.log_round(tracking, run, k, metrics, out)
        lineage.tag(tracking.uri, run.run_id, {"ratchet.generation_backend": generated.kind})
        evaluated = str(out / "eval") if (out / "eval").exists() else None
        on_tasks = not decision.promote and (decision.deciding_rule or "").startswith("task/task_completion")
        items = stages.review_items(
            str(out / "pairs"), evaluated, cfg.data, evaluation_judge_name(cfg), cfg.review.max_pairs, on_tasks
        )
        trace_ids = review.queue(tracking.uri, tracking.experiment_id, tracking.bootstrap_id, k, items)
        review_items.save_queued(out, trace_ids, items)
    if challenger:
        # The version's tags lead back to what made it: base, adapter chain, round, training judge, bootstrap.
        provenance = {"base": challenger.base, "adapter_chain": list(challenger.adapters), "round": k}
        provenance |= {"training_judge": cfg.judge.model_dump(mode="json"), "bootstrap_id": tracking.bootstrap_id}
        adapter = Path(challenger.adapters[-1])
        version = versions.register_adapter(
            tracking.uri, tracking.model_name, run.run_id, adapter, provenance, parent=previous
        )
        versions.point_alias(tracking.uri, tracking.model_name, "challenger", version)
    if redecided(run, decision):
        lineage.log_decision(tracking, run, k, asdict(decision))
    was_promoted = bool(run.decision and run.decision["promote"])
    if decision.promote or was_promoted:  # a round re-decided either way moves the champion with it
        champion = version if decision.promote else previous
        versions.point_alias(tracking.uri, tracking.model_name, "champion", champion)
    return version if decision.promote else previous


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def record_reward_model(
    cfg: ExperimentConfig,
    k: int,
    tracking: lineage.BootstrapRun,
    run: lineage.RoundRun,
    rewarded: reward_stage.Rewarded,
) -> str:
    """The round's reward model as a version of `<model>-reward`, its tags the lineage: base, the rounds whose
    pairs trained it, who labelled them, the training judge's config and the bootstrap."""
    provenance = {"base": rewarded.base, "rounds": rewarded.rounds, "labelled_by": rewarded.judges, "round": k}
    provenance |= {"training_judge": cfg.judge.model_dump(mode="json"), "bootstrap_id": tracking.bootstrap_id}
    name = f"{tracking.model_name}-reward"
    return versions.register_reward_model(tracking.uri, name, run.run_id, Path(rewarded.path), provenance)


def redecided(run: lineage.RoundRun, decision: Decision) -> bool:
    """Whether `decision` is not yet what the round's MLflow run holds (a first run, or changed gate rules)."""
    return run.decision is None or run.decision["reason"] != decision.reason

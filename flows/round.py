"""One bootstrap round as a Prefect flow: generate -> judge -> train -> evaluate -> gate -> record.

Each stage is a task cached on its inputs (the config sections it reads, the champion, its paths) plus the code in
components/, with its small typed result persisted as JSON, so a new run of the same bootstrap skips finished stages
and a changed gate rule re-decides a round without retraining it. The directories are the ground truth: a cached
path that no longer exists is recomputed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from components import build, reward_stage, stages
from components.config import ExperimentConfig
from components.evaluation import Evaluated
from components.evaluation import evaluate as evaluate_stage
from components.models import Policy
from components.requests import EvaluateRequest, GenerateRequest, JudgeRequest, RewardRequest, TrainRequest
from flows import shards
from flows.caching import STAGE
from flows.recording import human_agreement, record, record_reward_model, redecided, snapshot_gold
from flows.reporting import publish_round_report
from registry import lineage
from registry.promotion import Decision, decide

# The components' own INFO lines (e.g. each training step's loss) reach the Prefect UI through
# PREFECT_LOGGING_EXTRA_LOGGERS=components (`ratchet` and prefect.yaml set it); the quiet terminal leaves them out.
logging.getLogger("components").setLevel(logging.INFO)


@task(**STAGE)
def generate(request: GenerateRequest) -> stages.Generated:
    """Sample responses to the training prompts from the champion."""
    return stages.generate(request)


@task(**STAGE)
def judge(request: JudgeRequest) -> stages.Judged:
    """Build preference pairs with the training judge, plus the gold pairs people labelled."""
    return stages.judge(request)


@task(**STAGE)
def reward(request: RewardRequest) -> reward_stage.Rewarded:
    """Train the round's reward model on the judged pairs of this round and the earlier ones; measure its quality."""
    return reward_stage.reward_model(request)


@task(**STAGE)
def train(request: TrainRequest) -> stages.Trained:
    """Train a LoRA adapter (DPO on the pairs, GRPO/RLOO with the judge or the reward model as reward); none if
    nothing to learn."""
    return stages.train(request)


@task(**STAGE)
def evaluate(request: EvaluateRequest) -> Evaluated:
    """Score challenger vs champion (and the round-0 base) on the held-out cohorts."""
    return evaluate_stage(request)


def _run(stage, k: int, *args):
    """Call a stage task; if its cached result points at a directory that is gone, recompute it. One line on the
    terminal when it is done."""

    def fresh():
        result = stage(*args)
        if result.path is not None and not Path(result.path).exists():
            result = stage.with_options(refresh_cache=True)(*args)
        return result

    return _timed(k, stage.name, fresh)


def _timed(k: int, name: str, call, *args):
    started = time.perf_counter()
    result = call(*args)
    say("round %d · %-8s done in %s%s", k, name, _clock(time.perf_counter() - started), _summary(result))
    return result


def say(message: str, *args) -> None:
    """An INFO line for the Prefect UI that the quiet terminal shows too (flows/console.ConsoleFilter)."""
    get_run_logger().info(message, *args, extra={"console": True})


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _summary(result) -> str:
    if isinstance(result, stages.Generated):
        return f": {result.samples} samples ({result.kind})"
    if isinstance(result, stages.Judged):
        return f": {result.pairs - result.abstained} pairs, {result.abstained} abstained"
    if isinstance(result, reward_stage.Rewarded) and result.path is None:
        return ": no pair to train on yet"
    if isinstance(result, reward_stage.Rewarded):
        accuracy = result.metrics.get("rm_heldout_accuracy", float("nan"))
        return f": {accuracy:.0%} right on {int(result.metrics['rm_heldout_pairs'])} held-out pairs"
    if isinstance(result, stages.Trained) and "steps" in result.metrics:
        return f": {int(result.metrics['steps'])} steps"
    return ""


@dataclass(frozen=True)
class RoundResult:
    k: int
    decision: Decision
    metrics: dict[str, float]
    champion: Policy  # after this round
    champion_version: str | None  # its registered version; None while it is the base model


@flow(name="round", flow_run_name="round-{k}")
def bootstrap_round(
    cfg: ExperimentConfig,
    k: int,
    workdir: str,
    tracking: lineage.BootstrapRun,
    champion: Policy,
    champion_version: str | None,
    history: list[RoundResult],
) -> RoundResult:
    """Run round k against the champion; return the decision, metrics and the next champion."""
    out, seed = Path(workdir) / f"round-{k}", cfg.seed + k
    stages.claim_round(out, champion)
    with lineage.round_run(tracking, k, champion.key(), str(flow_run.id)) as run:
        # --- generate: n samples per training prompt from the champion
        adapters = f" + {len(champion.adapters)} adapter(s), version {champion_version}" if champion.adapters else ""
        say("round %d of %d: champion %s%s", k, cfg.rounds, champion.base, adapters)
        sampling = build.generate_request(cfg, champion, out / "generations", seed)
        if shards.sharded(cfg.execution):  # as shard tasks, on a Ray cluster with `execution.engine: ray`
            generated = _timed(k, "generate", shards.generate, cfg.execution, sampling)
        else:
            generated = _run(generate, k, sampling)
        # --- judge: best against worst sample per prompt, abstentions kept and counted
        gold = snapshot_gold(tracking, out, k)
        judging = build.judge_request(cfg, champion, generated.path, out / "pairs", gold, memo_dir(cfg))
        if shards.sharded(cfg.execution):
            judged = _timed(k, "judge", shards.judge, cfg.execution, judging)
        else:
            judged = _run(judge, k, judging)
        # --- reward: a reward model fitted to the judged pairs so far (with a `reward_model:` section)
        rewarded = None
        if cfg.reward_model:
            rounds = reward_stage.reward_rounds(Path(workdir), k, cfg.reward_model.rounds)
            rewarded = _run(reward, k, build.reward_request(cfg, rounds, out / "reward_model", seed))
        reward_model = rewarded.path if rewarded else None
        # --- train: a fresh LoRA adapter on top of the champion, which is also the reference
        request = build.train_request(cfg, champion, generated.path, judged, out / "adapter", seed, reward_model)
        trained = _run(train, k, request)
        challenger = champion.with_adapter(trained.path) if trained.path else None
        # --- evaluate: held-out cohorts, judged by a model that did not train the challenger
        evaluated = None
        if challenger:
            asked = build.evaluate_request(cfg, champion, challenger, out / "eval", memo_dir(cfg), reward_model)
            evaluated = _run(evaluate, k, asked)
        metrics = stages.round_metrics(judged, trained, evaluated, rewarded) | human_agreement(cfg, tracking, out, k)
        # --- gate: promote only when every blocking rule holds (and, if configured, a person agrees)
        decision = decide(metrics, cfg.gate.rules, trained=challenger is not None)
        if run.decision and run.decision["gate_reason"] == decision.gate_reason:
            decision = Decision.from_dict(run.decision)  # decided before, on the same rules: keep it (and its review)
        elif decision.promote and cfg.gate.require_approval:
            decision = _ask_approval(decision, cfg.gate.approval_timeout)
        say("round %d: %s", k, decision.reason)
        # --- record: lineage, aliases and the report, for what this run has not logged yet
        version = record(cfg, k, tracking, run, metrics, decision, challenger, out, generated, champion_version)
        if rewarded and rewarded.path:
            record_reward_model(cfg, k, tracking, run, rewarded)
        if not run.logged or redecided(run, decision):
            publish_round_report(cfg, k, tracking, run.run_id, metrics, decision, history, judged, evaluated, out)
    return RoundResult(k, decision, metrics, challenger if decision.promote else champion, version)


class Approval(RunInput):
    """The form a reviewer fills in the Prefect UI when a round waits for approval."""

    approve: bool = Field(description="Make this challenger the champion?")
    reviewer: str = Field("", description="Who decided.")
    note: str = Field("", description="Why (kept in MLflow with the decision).")


def _ask_approval(decision: Decision, timeout: int) -> Decision:
    """Pause until a reviewer submits the Approval form in the Prefect UI; a rejection keeps the champion."""
    get_run_logger().info("gate passed; waiting up to %d s for approval in the Prefect UI (resume this run)", timeout)
    # A timeout raises FlowPauseTimeout: the round's run ends FAILED, and a re-run asks again.
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, poll_interval=5)
    who = answer.reviewer or "a reviewer"
    approval = {"approved": answer.approve, "reviewer": answer.reviewer, "note": answer.note}
    if answer.approve:
        return replace(decision, reason=f"{decision.reason}; approved by {who}", approval=approval)
    reason = f"rejected by {who}{f': {answer.note}' if answer.note else ''} (gate had passed)"
    return replace(decision, promote=False, reason=reason, deciding_rule="human review", approval=approval)


def memo_dir(cfg: ExperimentConfig) -> Path:
    """The run store's memo (components/memo.py), shared by every bootstrap in the config's workdir."""
    return Path(cfg.workdir).resolve() / "memo"

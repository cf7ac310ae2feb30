"""One bootstrap round as a Prefect flow: generate -> judge -> (reward) -> train -> evaluate -> gate -> record.

Each stage is a task given one typed request (components/requests.py, built there from the config)
and cached on it and on the code (flows/caching.py), with its small typed result persisted as JSON. So a new run of
the same bootstrap skips the stages that finished, a stage whose directory is gone is recomputed, and changed gate
rules re-decide a round without retraining it (flows/gate.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from components import requests, reward_stage, stages
from components.config.experiment import ExecutionConfig, ExperimentConfig
from components.evaluate_stage import Evaluated
from components.evaluate_stage import evaluate as evaluate_stage
from components.models import Policy
from components.requests import EvaluateRequest, GenerateRequest, JudgeRequest, RewardRequest, TrainRequest
from flows import shards
from flows.caching import STAGE, fresh
from flows.engine import engine_for
from flows.gate import gate
from flows.recording import human_agreement, record, record_reward_model, redecided, snapshot_gold
from flows.reporting import publish_round_report
from flows.terminal import say, timed
from registry import lineage
from registry.promotion import Decision

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


SHARDED = {"generate": shards.generate, "judge": shards.judge}  # the stages that run as shard tasks


def _run(k: int, stage, request, execution: ExecutionConfig | None = None):
    """Run a stage task on its request, as shard tasks where `execution` asks for them (generate and judge)."""
    if execution is not None and engine_for(execution).sharded:
        return timed(k, stage.name, SHARDED[stage.name], execution, request)
    return timed(k, stage.name, fresh(stage, request.out), request)


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
    out, seed, memo = Path(workdir) / f"round-{k}", cfg.seed + k, memo_dir(cfg)
    stages.claim_round(out, champion)
    with lineage.round_run(tracking, k, champion.key(), str(flow_run.id)) as run:
        adapters = f" + {len(champion.adapters)} adapter(s), version {champion_version}" if champion.adapters else ""
        say("round %d of %d: champion %s%s", k, cfg.rounds, champion.base, adapters)
        # --- generate: n samples per training prompt from the champion
        sampling = requests.generate_request(cfg, champion, out / "generations", seed)
        generated = _run(k, generate, sampling, cfg.execution)
        # --- judge: best against worst sample per prompt, abstentions kept and counted, people's labels added
        gold = snapshot_gold(tracking, out, k)
        judging = requests.judge_request(cfg, champion, generated.path, out / "pairs", gold, memo)
        judged = _run(k, judge, judging, cfg.execution)
        # --- reward: a reward model fitted to the judged pairs so far (with a `reward_model:` section)
        rewarded = None
        if cfg.reward_model:
            rounds = reward_stage.reward_rounds(Path(workdir), k, cfg.reward_model.rounds)
            rewarded = _run(k, reward, requests.reward_request(cfg, rounds, out / "reward_model", seed))
        reward_model = rewarded.path if rewarded else None
        # --- train: a fresh LoRA adapter on top of the champion, which is also the reference
        training = requests.train_request(cfg, champion, generated.path, judged, out / "adapter", seed, reward_model)
        trained = _run(k, train, training)
        challenger = champion.with_adapter(trained.path) if trained.path else None
        # --- evaluate: held-out cohorts, judged by a model that did not train the challenger
        evaluated = None
        if challenger:
            asked = requests.evaluate_request(cfg, champion, challenger, out / "eval", memo, reward_model)
            evaluated = _run(k, evaluate, asked)
        metrics = stages.round_metrics(judged, trained, evaluated, rewarded) | human_agreement(cfg, tracking, out, k)
        # --- gate: the rules, a decision recorded before on the same rules, a person's approval
        decision = gate(requests.gate_request(cfg, metrics, trained=challenger is not None), run)
        say("round %d: %s", k, decision.reason)
        # --- record: lineage, aliases and the report, for what this run has not logged yet
        version = record(cfg, k, tracking, run, metrics, decision, challenger, out, generated, champion_version)
        if rewarded and rewarded.path:
            record_reward_model(cfg, k, tracking, run, rewarded)
        if not run.logged or redecided(run, decision):
            publish_round_report(cfg, k, tracking, run.run_id, metrics, decision, history, judged, evaluated, out)
    return RoundResult(k, decision, metrics, challenger if decision.promote else champion, version)


def memo_dir(cfg: ExperimentConfig) -> Path:
    """The run store's memo (components/memo.py), shared by every bootstrap in the config's workdir."""
    return Path(cfg.workdir).resolve() / "memo"

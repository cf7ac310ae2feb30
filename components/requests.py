"""What a stage is asked to do: one frozen, typed request per stage, built from the config here (`train_request`,
...) and passed whole to the stage (`stages.train(request) -> Trained`; the gate: `promotion.decide(request) ->
Decision`). Training under `accelerate launch` writes it as JSON and each process reads it back whole
(train_worker.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config.experiment import (
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    GenerationConfig,
    ModelsConfig,
    PairsConfig,
    RewardModelConfig,
    TrainingConfig,
)
from components.config.gate import GateConfig
from components.config.judges import JudgeConfig
from components.config.strict import Strict
from components.models import Policy


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: a contiguous run of the stage's prompts. Shards are cut at whole batches of
    `batch` prompts, so every batch is the one an unsharded run makes, and the merged output is the same."""

    index: int = 0
    count: int = 1

    def select(self, prompts: list[dict], batch: int = 1) -> list[dict]:
        batches = (len(prompts) + batch - 1) // batch
        start, end = (round(i * batches / self.count) * batch for i in (self.index, self.index + 1))
        return prompts[start:end]


WHOLE = Shard()


class GenerateRequest(Strict):
    """Sample `generation.samples_per_prompt` responses to each training prompt (of the shard) from the champion."""

    models: ModelsConfig
    data: DataConfig
    generation: GenerationConfig
    champion: Policy
    out: Path
    seed: int
    shard: Shard = WHOLE


class JudgeRequest(Strict):
    """Turn each prompt's samples (of the shard) into preference pairs with the training judge, plus the gold pairs
    people labelled (`gold`: a JSON list of pair rows, added where the shards merge)."""

    models: ModelsConfig
    data: DataConfig
    judge: JudgeConfig
    pairs: PairsConfig
    champion: Policy
    generations: str
    out: Path
    gold: str | None = None
    memo: Path | None = None  # the run store's memo: an AI judge's scores survive a killed stage
    shard: Shard = WHOLE


class TrainRequest(Strict):
    """Train a fresh LoRA adapter on the champion into `out`."""

    models: ModelsConfig
    data: DataConfig  # the training prompts, for GRPO/RLOO's online samples
    training: TrainingConfig
    judge: JudgeConfig  # GRPO/RLOO's reward with `reward: judge`
    champion: Policy  # the model trained, and DPO's reference
    generations: str  # the round's samples: the judge reward's anchor answers
    pairs: str  # the judged pairs, DPO's data
    decided_pairs: int  # pairs the judge did not abstain on: DPO has nothing to learn without one
    out: Path
    seed: int
    reward_model: str | None = None  # the round's reward model's directory, for `reward: reward_model`
    reward_model_config: RewardModelConfig | None = None  # the config's `reward_model:` section, if any

    @property
    def checkpoints(self) -> Path:
        return checkpoints_beside(self.out)


class RewardRequest(Strict):
    """Train the round's reward model on the judged pairs of `rounds` ((round, pairs directory)) into `out`."""

    models: ModelsConfig
    data: DataConfig  # the training prompts, whose checks measure it
    reward_model: RewardModelConfig
    evaluation: EvaluationConfig  # the confidence level and resamples of its quality's intervals
    rounds: list[tuple[int, str]]
    out: Path
    seed: int

    @property
    def checkpoints(self) -> Path:
        return checkpoints_beside(self.out)


def checkpoints_beside(out: Path) -> Path:
    """A trainer's checkpoints, beside its output directory, so a killed run resumes from the last one."""
    return out.parent / f".{out.name}.checkpoints"


class EvaluateRequest(Strict):
    """Score the challenger against the champion (and the round-0 base) on the held-out prompts into `out`."""

    models: ModelsConfig
    data: DataConfig
    generation: GenerationConfig  # how the policies answer (greedy, with the evaluation's token budget)
    evaluation: EvaluationConfig
    training_judge: JudgeConfig  # the self-judge's rubric follows it (evaluation.self_agreement)
    seed: int
    champion: Policy
    challenger: Policy
    out: Path
    memo: Path | None  # the run store's memo; None computes everything
    reward_model: str | None = None  # the round's reward model: its score of the challenger against the base
    reward_model_config: RewardModelConfig | None = None  # the config's `reward_model:` section, if any


class GateRequest(Strict):
    """Decide a round by the config's gate on its metrics. `trained` is False when the round had no pair to learn
    from: there is no challenger, and the champion stays."""

    gate: GateConfig
    metrics: dict[str, float]  # a metric the round did not measure is absent, or NaN
    trained: bool


def generate_request(cfg: ExperimentConfig, champion: Policy, out: Path, seed: int) -> GenerateRequest:
    """The generate stage's request for a round."""
    sections = {"models": cfg.models, "data": cfg.data, "generation": cfg.generation}
    return GenerateRequest(**sections, champion=champion, out=out, seed=seed)


def judge_request(
    cfg: ExperimentConfig, champion: Policy, generations: str, out: Path, gold: str | None, memo: Path | None
) -> JudgeRequest:
    """The judge stage's request for a round."""
    sections = {"models": cfg.models, "data": cfg.data, "judge": cfg.judge, "pairs": cfg.pairs}
    return JudgeRequest(**sections, champion=champion, generations=generations, out=out, gold=gold, memo=memo)


def train_request(
    cfg: ExperimentConfig, champion: Policy, generations: str, judged, out: Path, seed: int, reward_model: str | None
) -> TrainRequest:
    """The train stage's request for a round: the config's sections it reads, the round's inputs (judged: its
    stages.Judged)."""
    sections = {"models": cfg.models, "data": cfg.data, "training": cfg.training, "judge": cfg.judge}
    decided = judged.pairs - judged.abstained
    return TrainRequest(
        **sections,
        champion=champion,
        generations=generations,
        pairs=judged.path,
        decided_pairs=decided,
        out=out,
        seed=seed,
        reward_model=reward_model,
        reward_model_config=cfg.reward_model,
    )


def reward_request(cfg: ExperimentConfig, rounds: list[tuple[int, str]], out: Path, seed: int) -> RewardRequest:
    """The reward stage's request for a round (with a `reward_model:` section)."""
    sections = {"models": cfg.models, "data": cfg.data, "reward_model": cfg.reward_model, "evaluation": cfg.evaluation}
    return RewardRequest(**sections, rounds=rounds, out=out, seed=seed)


def evaluate_request(
    cfg: ExperimentConfig,
    champion: Policy,
    challenger: Policy,
    out: Path,
    memo: Path | None,
    reward_model: str | None = None,
) -> EvaluateRequest:
    """The evaluate stage's request: the challenger against the champion, by the config's evaluation."""
    sections = {"models": cfg.models, "data": cfg.data, "generation": cfg.generation, "evaluation": cfg.evaluation}
    return EvaluateRequest(
        **sections,
        training_judge=cfg.judge,
        seed=cfg.seed,
        champion=champion,
        challenger=challenger,
        out=out,
        memo=memo,
        reward_model=reward_model,
        reward_model_config=cfg.reward_model,
    )


def gate_request(cfg: ExperimentConfig, metrics: dict[str, float], trained: bool) -> GateRequest:
    """The gate's request for a round (or for `ratchet evaluate`, which always has a challenger)."""
    return GateRequest(gate=cfg.gate, metrics=metrics, trained=trained)

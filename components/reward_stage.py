"""The reward stage: the round's reward model, trained on the judged pairs of this round and the earlier ones and
measured on what it never trained on (reward_model.py holds the model itself). Like the other stages it writes its
directory atomically and skips the work when the directory exists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.data import load_prompts, save_stage
from components.evaluation.measures import ci_for
from components.judge_check import load_gold
from components.requests import RewardRequest
from components.training import reward_model as rm


@dataclass(frozen=True)
class Rewarded:
    path: str | None  # the reward model's adapter (LoRA and head); None: no pair to train one on yet
    base: str  # the model it sits on
    rounds: list[int]  # whose judged pairs it was trained on
    judges: list[str]  # who labelled them
    metrics: dict[str, float]  # its training and its quality, by bare name


def reward_model(request: RewardRequest) -> Rewarded:
    """Train the round's reward model on the judged pairs of the request's rounds, except the held-out prompts'
    pairs, on which (and on the gold pairs: `reward_model.gold_pairs`, else the calibration set) its quality is
    measured. With no pair to train on (every one abstained or held out), no reward model: the round has nothing to
    learn from it."""
    r, config, models, rounds = request, request.reward_model, request.models, request.rounds
    pairs = rm.judged_pairs(rounds)
    heldout, train = [], []
    for pair in pairs:
        (heldout if rm.held_out(pair["prompt_id"], config.heldout_fraction) else train).append(pair)
    judges, ks, base = sorted({p["judge"] for p in pairs}), [k for k, _ in rounds], rm.base_of(config, models)
    if not train:
        return Rewarded(None, base, ks, judges, {"rm_train_pairs": 0.0, "rm_rounds": float(len(rounds))})

    def build(tmp: Path) -> dict:
        trained = rm.train_reward_model(config, models, train, tmp, r.checkpoints, r.seed)
        model = rm.RewardModel.load(tmp, base, models, config.batch_size)
        prompts = {p["id"]: p for p in load_prompts(r.data.train_prompts, r.data.max_train_prompts)}
        found = rm.quality(model, heldout, load_gold(config.gold_pairs), prompts, ci_for(r.evaluation))
        found |= {f"rm_train_{k}": float(trained[k]) for k in ("steps", "seconds", "loss_last") if trained.get(k)}
        found |= {"rm_train_pairs": float(len(train)), "rm_rounds": float(len(rounds))}
        return {"metrics": found, "base": base}

    found = save_stage(r.out, build, record=rm.RECORD)
    return Rewarded(str(r.out), base, ks, judges, found["metrics"])


def reward_rounds(workdir: Path, k: int, last: int | None) -> list[tuple[int, str]]:
    """The rounds whose judged pairs round k's reward model learns from: k and the earlier ones (the last `last`)."""
    first = 1 if last is None else max(1, k - last + 1)
    return [(j, str(workdir / f"round-{j}" / "pairs")) for j in range(first, k + 1)]

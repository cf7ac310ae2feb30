"""Training one adapter in this process: the work of the train stage (stages.train), in-process or in each of the
processes `accelerate launch` starts (train_worker.py)."""

from __future__ import annotations

from pathlib import Path

from components import reward_model as rm
from components.build import learns_from_pairs, make_judge, make_trainer
from components.data import load_prompts, load_rows
from components.models import load_tokenizer
from components.requests import TrainRequest
from components.rewards import JudgeReward, OnlineReward, VerifierReward
from components.trainer import load_for_training


def train_adapter(request: TrainRequest, into: Path) -> dict:
    """Train the adapter the request asks for into `into`; its metrics."""
    r = request
    tokenizer = load_tokenizer(r.champion.base)
    if learns_from_pairs(r.training):
        reward, examples = None, load_rows(r.pairs)
    else:
        examples = load_prompts(r.data.train_prompts, r.data.max_train_prompts)
        reward = _online_reward(r, list(examples))
    model = load_for_training(r.champion, r.training, r.models)
    trainer = make_trainer(r.training, model, tokenizer, r.models, r.seed, r.checkpoints, reward)
    return trainer.train(examples, into)


def _online_reward(r: TrainRequest, prompts: list[dict]) -> OnlineReward:
    """What scores GRPO/RLOO's samples: the round's reward model and the verifier, weighted; or the judge."""
    if r.training.reward == "reward_model":
        if r.reward_model is None:
            raise ValueError("training.reward is reward_model, but the round trained no reward model")
        scorer = rm.RewardModel.from_stage(r.reward_model, r.models, r.reward_model_config.batch_size)
        funcs = [scorer.model, VerifierReward(prompts)]
        weights = [r.training.reward_model_weight, r.training.verifier_weight]
        return OnlineReward(funcs, [scorer.tokenizer, None], weights)
    anchors = {g["prompt_id"]: g["response"] for g in load_rows(r.generations) if g["sample"] == 0}
    return OnlineReward([JudgeReward(make_judge(r.judge, r.champion, r.models), prompts, anchors)])

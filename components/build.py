"""Config to component: with components/build_judges.py (judge, verdict, pairs), the only place that chooses by a
kind (generation, training, reward, launcher); it builds what the kind names. Stages ask here for their generator
and trainer, and in build_judges.py for their judge and pair maker (each stage's request is built from the config in
requests.py). The engine is chosen in flows/engine.py; tests/test_dispatch.py fails on a choice by kind anywhere
else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.build_judges import make_judge
from components.config.experiment import (
    DPOTrainingConfig,
    GenerationConfig,
    ModelsConfig,
    OnlineTrainingConfig,
    ServerGenerationConfig,
    TrainingConfig,
    TransformersGenerationConfig,
    VLLMGenerationConfig,
)
from components.data import load_prompts, load_rows
from components.generation.generator import Generator, Sampling, TransformersGenerator, VLLMGenerator
from components.generation.server_generator import ServerGenerator
from components.models import Policy, device_for, load_policy, load_tokenizer
from components.requests import TrainRequest
from components.training import accelerate_launch
from components.training import reward_model as rm
from components.training.rewards import JudgeReward, OnlineReward, VerifierReward
from components.training.trainer import DPOLoRATrainer, OnlineTrainer, Trainer, load_for_training


def make_generator(
    config: GenerationConfig,
    policy: Policy,
    models: ModelsConfig,
    tokenizer: PreTrainedTokenizerBase,
    sampling: Sampling,
    batch_size: int | None = None,
    model: PreTrainedModel | None = None,
) -> Generator:
    """The sampler `generation.kind` names. `model`, when given, is `policy` already in memory (transformers
    samples with it; vLLM loads its own copy in its engine process). `batch_size` replaces the config's."""
    match config:
        case TransformersGenerationConfig():
            # The newest adapter stays an unmerged PEFT layer, as vLLM serves it.
            model = model if model is not None else load_policy(policy, models, merge_last=False)
            return TransformersGenerator(model, tokenizer, sampling, batch_size or config.batch_size)
        case VLLMGenerationConfig():
            merge_last = config.adapter == "merged" or config.adapter == "auto" and device_for(models) == "cpu"
            return VLLMGenerator(policy, models, tokenizer, sampling, merge_last)
        case ServerGenerationConfig():
            return ServerGenerator(config, policy, models, tokenizer, sampling)


def prompts_per_batch(config: GenerationConfig) -> int:
    """How many prompts the generator takes at once (a shard's prompts come in whole batches): transformers' batch;
    vLLM and servers seed each prompt and batch on their own."""
    match config:
        case TransformersGenerationConfig():
            return config.batch_size
        case VLLMGenerationConfig() | ServerGenerationConfig():
            return 1


def learns_from_pairs(config: TrainingConfig) -> bool:
    """Whether the kind trains on the judged pairs (DPO), rather than on fresh samples the judge scores online."""
    match config:
        case DPOTrainingConfig():
            return True
        case OnlineTrainingConfig():
            return False


def nothing_to_learn(request: TrainRequest) -> bool:
    """DPO with no pair the judge decided; GRPO/RLOO rewarded by a reward model no round has trained yet."""
    match request.training:
        case DPOTrainingConfig():
            return request.decided_pairs == 0
        case OnlineTrainingConfig():
            return request.training.reward == "reward_model" and request.reward_model is None


def train_runner(config: TrainingConfig) -> Callable[[TrainRequest, Path], dict]:
    """How the train stage runs `train_adapter`: in this process, or in each of `num_processes` processes under
    `accelerate launch`."""
    match config.launcher:
        case "accelerate":
            return accelerate_launch.launch
        case "in_process":
            return train_adapter


def pairs_trained(config: TrainingConfig, metrics: dict) -> int | None:
    """The pairs a round's training used: DPO's examples (after `max_pairs` and `length_balanced`); None for the
    online kinds, which train on fresh samples, not on the judge's pairs."""
    match config:
        case DPOTrainingConfig():
            return int(metrics["examples"])
        case OnlineTrainingConfig():
            return None


def make_trainer(
    config: TrainingConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    models: ModelsConfig,
    seed: int,
    checkpoints: Path,
    reward: OnlineReward | None,
) -> Trainer:
    """The trainer `training.kind` names; the online kinds take what scores their samples as `reward`."""
    match config:
        case DPOTrainingConfig():
            return DPOLoRATrainer(model, tokenizer, config, models, seed, checkpoints)
        case OnlineTrainingConfig():
            trl_classes = _online_trl_classes(config)
            return OnlineTrainer(model, tokenizer, config, models, seed, checkpoints, reward, trl_classes)


def _online_trl_classes(config: OnlineTrainingConfig) -> tuple[type, type]:
    """TRL's config and trainer classes for `training.kind`."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    match config.kind:
        case "grpo":
            return GRPOConfig, GRPOTrainer
        case "rloo":
            return RLOOConfig, RLOOTrainer


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

"""Train: a fresh LoRA adapter on top of the champion, with TRL.

- `dpo`: DPOTrainer on the round's preference pairs (offline).
- `grpo` / `rloo`: TRL's online PPO-family trainers; they sample fresh completions and score them with the judge.

The champion (base + its merged adapter chain) is the model we add LoRA to. With `peft_config` and no `ref_model`,
TRL uses the adapter-off model as the reference, which is exactly the champion: no second copy in memory.
With `load_in_4bit: true` the champion is loaded through bitsandbytes NF4 first (QLoRA); this runs on CPU too.
Checkpoints go to a directory outside the atomic output, so a killed run resumes from its last checkpoint.
Measured here: ~28 s per DPO step of 8 pairs at up to 320 tokens on SmolLM2-135M, 2 cores.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
)

from components.config.experiment import DPOTrainingConfig, ModelsConfig, OnlineTrainingConfig, TrainingConfig
from components.models import Policy, device_for, dtype_for, load_policy, resolve_model
from components.training.callbacks import StepProgress, TimeBudget
from components.training.pair_selection import to_conversational
from components.training.rewards import OnlineReward
from components.training.trl_cpu import score_only_labelled_positions

if TYPE_CHECKING:
    from peft import LoraConfig


class Trainer(Protocol):
    def train(self, data: Dataset, output_dir: Path) -> dict:
        """Train an adapter on the round's data (pairs or prompts), save it to output_dir, and return its metrics."""
        ...


def load_for_training(policy: Policy, config: TrainingConfig, models: ModelsConfig) -> PreTrainedModel:
    """The champion as a trainable base: in `models.dtype`, or NF4 4-bit through bitsandbytes for QLoRA."""
    if not config.load_in_4bit:
        return load_policy(policy, models)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    with _merged_checkpoint(policy, models) as directory:
        model = AutoModelForCausalLM.from_pretrained(
            directory, quantization_config=quant, device_map=device_for(models)
        )
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


@contextmanager
def _merged_checkpoint(policy: Policy, models: ModelsConfig):
    """bitsandbytes quantises at load time, so a champion with adapters is merged and saved once to a temp dir."""
    if not policy.adapters:
        yield resolve_model(policy.base)
        return
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-merged-"))
    try:
        load_policy(policy, models).save_pretrained(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lora_config(config: TrainingConfig) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def common_args(config: TrainingConfig, models: ModelsConfig, checkpoints: Path, seed: int) -> dict:
    """TrainingArguments shared by every method: the config's own names, checkpoints for resume, no loggers."""
    on_cpu = device_for(models) == "cpu"
    return {
        "output_dir": str(checkpoints),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "use_cpu": on_cpu,
        "bf16": not on_cpu and dtype_for(models) == torch.bfloat16,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 1,
        "gradient_checkpointing": config.gradient_checkpointing,
        "report_to": "none",
        "seed": seed,
        "disable_tqdm": True,  # StepProgress draws the bar and logs each step's numbers instead
    }


def resumable(checkpoint: Path) -> bool:
    """Whether a checkpoint is whole: the Trainer writes trainer_state.json after the weights, so a kill while it
    saves leaves no state or a part of it (a SIGTERM in `json.dump` left it empty, seen 2026-12-05), and a kill
    while it deletes an older one (save_total_limit) can leave state alone."""
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return any(checkpoint.glob("*.safetensors"))


def run_training(trainer, checkpoints: Path, output_dir: Path, n_examples: int, max_seconds: float | None) -> dict:
    """Train (resuming from the last checkpoint if a killed run left one) within `max_seconds`, save the adapter,
    return its metrics."""
    score_only_labelled_positions()
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepProgress(f"train {type(trainer).__name__.removesuffix('Trainer').lower()}"))
    if max_seconds is not None:
        trainer.add_callback(TimeBudget(max_seconds))
    for checkpoint in checkpoints.glob("checkpoint-*"):
        if not resumable(checkpoint):
            shutil.rmtree(checkpoint)
    resume = any(checkpoints.glob("checkpoint-*"))
    with peak_rss() as peak:
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=True if resume else None)
        seconds = time.perf_counter() - started
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():  # under accelerate, one process of several writes
        trainer.model.save_pretrained(str(output_dir))
        shutil.rmtree(checkpoints, ignore_errors=True)
    found = summarise(trainer.state.log_history, n_examples, seconds, peak["gib"])
    return found | {"resumed": resume, "processes": trainer.accelerator.num_processes}


class DPOLoRATrainer:
    """TRL DPO with a PEFT LoRA adapter; the loaded model (the champion) is the reference."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: DPOTrainingConfig,
        models: ModelsConfig,
        seed: int,
        checkpoints: Path,
    ):
        self.model, self.tokenizer, self.config, self.models = model, tokenizer, config, models
        self.seed, self.checkpoints = seed, checkpoints

    def train(self, data: Dataset, output_dir: Path) -> dict:
        dataset = to_conversational(data, self.config.max_pairs, self.config.length_balanced)
        if len(dataset) == 0:
            raise ValueError("no non-abstained pairs to train on")
        from trl import DPOConfig, DPOTrainer

        c = self.config
        args = DPOConfig(
            **common_args(c, self.models, self.checkpoints, self.seed),
            beta=c.beta,
            loss_type=[c.loss_type],
            max_length=c.max_length,
            precompute_ref_log_probs=c.precompute_ref_log_probs,
        )
        trainer = DPOTrainer(
            model=self.model,
            args=args,
            train_dataset=dataset,
            processing_class=self.tokenizer,
            peft_config=lora_config(c),
        )
        return run_training(trainer, self.checkpoints, output_dir, len(dataset), c.max_seconds)


class OnlineTrainer:
    """GRPO or RLOO (`trl_classes`: TRL's config and trainer classes for the kind): fresh samples per prompt, scored
    by `reward` (the judge, or the reward model with the verifier), KL to the champion by `beta`."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: OnlineTrainingConfig,
        models: ModelsConfig,
        seed: int,
        checkpoints: Path,
        reward: OnlineReward,
        trl_classes: tuple[type, type],
    ):
        self.model, self.tokenizer, self.config, self.models = model, tokenizer, config, models
        self.seed, self.checkpoints, self.reward, self.trl_classes = seed, checkpoints, reward, trl_classes

    def train(self, data: Dataset, output_dir: Path) -> dict:
        """`data` holds prompt rows (`id`, `prompt` as the user message); the reward sees `prompt_id`."""
        dataset = data.map(
            lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}], "prompt_id": row["id"]},
            remove_columns=data.column_names,
        )
        c, (config_class, trainer_class) = self.config, self.trl_classes
        args = config_class(
            **common_args(c, self.models, self.checkpoints, self.seed),
            beta=c.beta,
            num_generations=c.num_generations,
            max_completion_length=c.max_completion_length,
            temperature=c.temperature,
            reward_weights=self.reward.weights,
        )
        trainer = trainer_class(
            model=self.model,
            reward_funcs=self.reward.funcs,
            reward_processing_classes=self.reward.processing_classes,
            args=args,
            train_dataset=dataset,
            processing_class=self.tokenizer,
            peft_config=lora_config(c),
        )
        return run_training(trainer, self.checkpoints, output_dir, len(dataset), c.max_seconds)


@contextmanager
def peak_rss(interval: float = 0.2):
    """Sample this process's RSS in a thread; yields a dict whose 'gib' holds the peak once the block ends."""
    result, done, process = {"gib": 0.0}, threading.Event(), psutil.Process()

    def sample() -> None:
        while not done.is_set():
            result["gib"] = max(result["gib"], process.memory_info().rss / 2**30)
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["gib"] = round(max(result["gib"], process.memory_info().rss / 2**30), 3)


# What each method logs (TRL's names) under the names Ratchet reports: DPO's implicit reward, GRPO's and RLOO's.
SIGNALS = {
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "reward": "reward_mean",
    "kl": "kl",
}


def summarise(log_history: list[dict], n_examples: int, seconds: float, peak_gib: float) -> dict:
    """First and last logged loss, the headline signals the method logged, throughput and peak memory, and the loss
    and signals step by step (`curves`: {name: [[step, value], ...]}). With one epoch, each step's numbers are on
    pairs that the adapter had not trained on yet."""
    steps = [entry for entry in log_history if "loss" in entry]
    last = steps[-1] if steps else {}
    metrics = {
        "examples": n_examples,
        "steps": len(steps),
        "loss_first": steps[0]["loss"] if steps else None,
        "loss_last": last.get("loss"),
        "seconds": round(seconds, 2),
        "tokens": last.get("num_tokens"),
        "tokens_per_second": round(last["num_tokens"] / seconds, 2) if "num_tokens" in last and seconds else None,
        "peak_rss_gib": peak_gib,
    }
    curves = {
        name: [[entry["step"], entry[key]] for entry in steps if key in entry]
        for key, name in {"loss": "loss", **SIGNALS}.items()
    }
    signals = {name: last[key] for key, name in SIGNALS.items() if key in last}
    return metrics | signals | {"curves": {name: points for name, points in curves.items() if points}}

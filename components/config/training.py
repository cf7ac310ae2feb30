"""The training sections of the experiment config: how the policy trains (`training:`, by kind) and how the
round's reward model trains (`reward_model:`). Defaults live here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Tag, model_validator

from components.config.judges import kind_or
from components.config.strict import Strict


class _Optimisation(Strict):
    """What every LoRA training shares, the policy's and the reward model's; the names are those of TRL's
    TrainingArguments and ModelConfig."""

    learning_rate: float = Field(5e-5, gt=0, description="AdamW learning rate for the LoRA weights.")
    num_train_epochs: int = Field(2, gt=0, description="Passes over the round's pairs (dpo) or prompts (grpo/rloo).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps (None = epochs).")
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Stop before an optimiser step that would end past this many seconds of training (wall "
        "clock, judged by the mean step so far; None = no limit). A run resumed after a crash counts from its own "
        "start.",
    )
    per_device_train_batch_size: int = Field(4, gt=0, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Steps per optimiser update.")
    save_steps: int = Field(10, gt=0, description="Save a resumable checkpoint every N steps.")
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute activations in the backward pass instead of keeping them (TRL's default): less "
        "memory, more time.",
    )
    lora_r: int = Field(16, gt=0, description="LoRA rank: higher = more capacity and memory.")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    lora_target_modules: str | list[str] = Field("all-linear", description="Modules that get LoRA adapters.")


class _Training(_Optimisation):
    """What every method that trains the policy shares."""

    load_in_4bit: bool = Field(
        False, description="QLoRA: load the champion as bitsandbytes NF4 (bf16 compute) under the adapter."
    )
    launcher: Literal["in_process", "accelerate"] = Field(
        "in_process",
        description="in_process: train in the flow's process; accelerate: `accelerate launch` with num_processes "
        "(data parallel: DDP on GPUs, gloo on CPUs; FSDP or DeepSpeed through accelerate_config).",
    )
    num_processes: int = Field(2, ge=1, description="Training processes under accelerate (one per GPU).")
    accelerate_config: str | None = Field(
        None, description="An `accelerate config` file (FSDP, DeepSpeed, several machines); None = plain DDP."
    )


class DPOTrainingConfig(_Training):
    """Offline: TRL's DPOTrainer on the round's judged pairs; the champion is the reference."""

    kind: Literal["dpo"] = Field("dpo", description="DPO on the judge's pairs (TRL's DPOTrainer).")
    beta: float = Field(0.1, gt=0, description="Higher = stay closer to the champion.")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="DPO loss variant.")
    max_length: int = Field(256, gt=0, description="Prompt + response tokens kept per pair (truncated beyond).")
    max_pairs: int | None = Field(
        None,
        gt=0,
        description="Train on at most this many of the round's pairs: those whose chosen answer beats the rejected "
        "one by the widest margin (fewer but clearer pairs, fewer steps; None = every decided pair).",
    )
    length_balanced: bool = Field(
        False,
        description="Train on as many pairs whose chosen answer is longer (in words) as pairs whose chosen answer is "
        "shorter: the more common side loses its narrowest-margin pairs. For a judge that follows word limits and "
        "other instructions a shorter answer meets more easily, whose pairs can otherwise teach answers to shrink.",
    )
    precompute_ref_log_probs: bool = Field(
        False,
        description="TRL computes the champion's (the reference's) log-probs of every pair in one pass before "
        "training, instead of a reference pass in every step; its cache beside the round's pairs "
        "(keyed by the pairs' and the model's digests) spares a resumed training that pass.",
    )


class OnlineTrainingConfig(_Training):
    """Online: TRL's GRPOTrainer or RLOOTrainer samples fresh completions and scores them with the training judge."""

    kind: Literal["grpo", "rloo"] = Field(
        "grpo", description="GRPO or RLOO online, the judge (or a reward model) as the reward (TRL's trainers)."
    )
    beta: float = Field(0.05, ge=0, description="KL penalty to the champion (0 = no reference pass).")
    num_generations: int = Field(4, ge=2, description="Samples per prompt per step (a batch divides by it).")
    max_completion_length: int = Field(48, gt=0, description="Tokens per fresh sample.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature of the fresh samples.")
    reward: Literal["judge", "reward_model"] = Field(
        "judge",
        description="judge: the training judge scores every sample (the verifier's graded score where a check "
        "exists); reward_model: the round's reward model (the `reward_model:` section) plus the verifier's graded "
        "score where a check exists, weighted below.",
    )
    reward_model_weight: float = Field(1.0, ge=0, description="Weight of the reward model's score (reward_model).")
    verifier_weight: float = Field(
        1.0, ge=0, description="Weight of the verifier's graded score, on prompts with a check (reward_model)."
    )

    @model_validator(mode="after")
    def _batch_fits_generations(self) -> OnlineTrainingConfig:
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) must be a multiple of "
                f"num_generations ({self.num_generations}) for {self.kind}"
            )
        return self


TRAINING_KINDS = {"dpo": DPOTrainingConfig, "grpo": OnlineTrainingConfig, "rloo": OnlineTrainingConfig}
TrainingConfig = Annotated[
    Annotated[DPOTrainingConfig, Tag("dpo")]
    | Annotated[OnlineTrainingConfig, Tag("grpo")]
    | Annotated[OnlineTrainingConfig, Tag("rloo")],
    kind_or("dpo"),
]


class RewardModelConfig(_Optimisation):
    """A reward model trained each round with TRL's RewardTrainer: a LoRA and a scalar head
    (AutoModelForSequenceClassification, one label) on `base`, fitted to the training judge's pairs of this round and
    the earlier ones. Prompts are split once by their id's hash, so the held-out pairs are never trained on in any
    round."""

    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate for the LoRA and the head.")
    base: str = Field(
        "policy",
        description="The reward model's base: `policy` (models.policy, the round-0 base), an embedded name, a local "
        "directory or a Hub id.",
    )
    rounds: int | None = Field(None, gt=0, description="Train on the pairs of the last N rounds (None = every round).")
    heldout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of training prompts whose pairs are held out to measure accuracy."
    )
    max_length: int = Field(384, gt=0, description="Prompt + response tokens per side; longer pairs are dropped.")
    gold_pairs: str | None = Field(
        None,
        description="Gold pairs its `rm_gold_accuracy` is measured on: a jsonl in `ratchet judge-check --pairs`'s "
        "format (prompt, better, worse, category). None = the 160 pairs of data/judge_calibration.jsonl.",
    )
    center_rewards_coefficient: float | None = Field(
        0.01, ge=0, description="Pulls scores toward mean zero (TRL's RewardConfig; None = off)."
    )
    batch_size: int = Field(16, gt=0, description="Answers per forward pass when the reward model scores.")

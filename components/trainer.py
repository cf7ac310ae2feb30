"""Train: preference-optimise a fresh LoRA adapter on the round's pairs with TRL's DPOTrainer.

The champion (base + its merged adapter chain) is loaded as a plain model, and DPO trains a new LoRA adapter on it.
With `peft_config` and no `ref_model`, TRL uses the adapter-off model as the reference, which is exactly the champion:
no second copy in memory. Measured here: ~12 s per step of 8 pairs at ~100 tokens on SmolLM2-135M, 2 cores.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Protocol

from datasets import Dataset
from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from components.config import TrainingConfig


class Trainer(Protocol):
    def train(self, pairs: Dataset, output_dir: Path) -> dict:
        """Train an adapter on the non-abstained pairs, save it to output_dir, and return its metrics."""
        ...


def to_conversational(pairs: Dataset) -> Dataset:
    """TRL's conversational preference format, so it applies the policy's own chat template."""
    kept = pairs.filter(lambda row: not row["abstained"])
    return kept.map(
        lambda row: {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        },
        remove_columns=kept.column_names,
    )


class DPOLoRATrainer:
    """TRL DPO with a PEFT LoRA adapter; the loaded model (the champion) is the reference."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: TrainingConfig, seed: int):
        self.model, self.tokenizer, self.config, self.seed = model, tokenizer, config, seed

    def train(self, pairs: Dataset, output_dir: Path) -> dict:
        dataset = to_conversational(pairs)
        if len(dataset) == 0:
            raise ValueError("no non-abstained pairs to train on")
        c = self.config
        args = DPOConfig(
            output_dir=str(output_dir / "checkpoints"),
            beta=c.beta,
            loss_type=[c.loss_type],
            learning_rate=c.learning_rate,
            num_train_epochs=c.epochs,
            per_device_train_batch_size=c.batch_size,
            gradient_accumulation_steps=c.gradient_accumulation_steps,
            max_length=c.max_length,
            use_cpu=True,
            bf16=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=self.seed,
        )
        lora = LoraConfig(
            r=c.lora_r,
            lora_alpha=c.lora_alpha,
            lora_dropout=c.lora_dropout,
            target_modules=c.target_modules,
            task_type="CAUSAL_LM",
        )
        trainer = DPOTrainer(
            model=self.model, args=args, train_dataset=dataset, processing_class=self.tokenizer, peft_config=lora
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        trainer.model.save_pretrained(str(output_dir))
        metrics = summarise(trainer.state.log_history, len(dataset), seconds)
        (output_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics


def summarise(log_history: list[dict], n_pairs: int, seconds: float) -> dict:
    """First and last logged loss, last reward margin and accuracy, time and peak memory."""
    steps = [entry for entry in log_history if "loss" in entry]
    last = steps[-1] if steps else {}
    return {
        "pairs": n_pairs,
        "steps": len(steps),
        "loss_first": steps[0]["loss"] if steps else float("nan"),
        "loss_last": last.get("loss", float("nan")),
        "reward_margin": last.get("rewards/margins", float("nan")),
        "reward_accuracy": last.get("rewards/accuracies", float("nan")),
        "train_seconds": round(seconds, 2),
        # ru_maxrss is in KiB on Linux
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }

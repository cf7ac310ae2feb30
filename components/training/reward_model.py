"""The reward model: a scalar score for (request, answer), fitted to the training judge's preferences.

TRL's RewardTrainer trains a LoRA and a one-label head (AutoModelForSequenceClassification) on a small base with the
Bradley-Terry loss on chosen vs rejected. Its data are the judged pairs of this round and the earlier ones, each row
keeping its round and its judge. Prompts are split once by a hash of their id, so a held-out prompt's pairs are never
trained on in any round, and the held-out accuracy stays an honest measure as rounds add data.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from statistics import mean

import numpy as np
import torch
from datasets import Dataset
from scipy.stats import spearmanr
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from components.checks import score
from components.config.experiment import ModelsConfig, RewardModelConfig
from components.data import load_rows, user_message
from components.evaluation.measures import CI
from components.metrics import with_ci
from components.models import device_for, dtype_for, load_tokenizer, resolve_model
from components.progress import progress
from components.training.trainer import common_args, run_training

RECORD = "reward_model.json"  # in the adapter directory: the base it was trained on


def base_of(config: RewardModelConfig, models: ModelsConfig) -> str:
    """The model spec the reward model's LoRA sits on."""
    return models.policy if config.base == "policy" else config.base


def held_out(prompt_id: str, fraction: float) -> bool:
    """Whether a prompt's pairs are held out: the same answer in every round and on every machine."""
    digest = hashlib.sha256(prompt_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def judged_pairs(rounds: list[tuple[int, str]]) -> list[dict]:
    """The decided pairs of each (round, pairs directory), with the round they came from; the judge that labelled
    each is already in its row."""
    rows = []
    for k, path in rounds:
        rows += [row | {"round": k} for row in load_rows(path) if not row["abstained"]]
    return rows


def conversational(pairs: list[dict]) -> Dataset:
    """RewardTrainer's conversational preference format, so the base's chat template frames each answer."""
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": p["prompt"]}],
                "chosen": [{"role": "assistant", "content": p["chosen"]}],
                "rejected": [{"role": "assistant", "content": p["rejected"]}],
            }
            for p in pairs
        ]
    )


def load_head(base: str, models: ModelsConfig) -> PreTrainedModel:
    """The base with a fresh one-label scoring head (seeded by the caller), on `models.device`."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a new head is the point: no report that its weights were not in the file
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(base), num_labels=1, dtype=dtype_for(models)
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.to(device_for(models))


def train_reward_model(
    config: RewardModelConfig, models: ModelsConfig, pairs: list[dict], out: Path, checkpoints: Path, seed: int
) -> dict:
    """Fit a LoRA reward model to `pairs` and save its adapter (with its head) to `out`; the trainer's metrics."""
    if not pairs:
        raise ValueError("no judged pairs to train a reward model on (every pair abstained or was held out)")
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    base = base_of(config, models)
    torch.manual_seed(seed)  # the head starts random
    args = RewardConfig(
        **common_args(config, models, checkpoints, seed),
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient,
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="SEQ_CLS",  # PEFT also trains and saves the new head (modules_to_save)
    )
    trainer = RewardTrainer(
        model=load_head(base, models),
        args=args,
        train_dataset=conversational(pairs),
        processing_class=load_tokenizer(base),
        peft_config=lora,
    )
    return run_training(trainer, checkpoints, out, len(pairs), config.max_seconds)


class RewardModel:
    """A trained reward model in memory: `score` for answers, and the module and tokenizer GRPO/RLOO take as a
    reward function (TRL applies the same chat template and reads `logits[:, 0]`)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @classmethod
    def load(cls, adapter: str | Path, base: str, models: ModelsConfig, batch_size: int) -> RewardModel:
        from peft import PeftModel

        tokenizer = load_tokenizer(base)
        model = PeftModel.from_pretrained(load_head(base, models), str(adapter)).merge_and_unload().eval()
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
        return cls(model, tokenizer, batch_size)

    @classmethod
    def from_stage(cls, directory: str | Path, models: ModelsConfig, batch_size: int) -> RewardModel:
        """The reward model a round's reward stage saved (its record names the base), scoring `batch_size` answers
        per forward pass (`reward_model.batch_size`)."""
        base = json.loads((Path(directory) / RECORD).read_text())["base"]
        return cls.load(directory, base, models, batch_size)

    @torch.inference_mode()
    def score(self, requests: list[str], answers: list[str]) -> list[float]:
        """The scalar reward of each answer to its request; a (request, answer) given twice is scored once (an
        answer sits in several of a prompt's pairs)."""
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
            )
            for q, a in zip(requests, answers, strict=True)
        ]
        unique = list(dict.fromkeys(texts))
        scores: list[float] = []
        for start in progress(range(0, len(unique), self.batch_size), "reward model", "batch"):
            batch = self.tokenizer(
                unique[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            ).to(self.model.device)
            scores += self.model(**batch).logits[:, 0].float().tolist()
        score_of = dict(zip(unique, scores, strict=True))
        return [score_of[text] for text in texts]


def quality(model: RewardModel, heldout: list[dict], gold: list[dict], prompts: dict[str, dict], ci: CI) -> dict:
    """How far to trust the reward model this round, by bare metric name (each rate with its CI): accuracy on the
    held-out judged pairs, on the calibration set's gold pairs, agreement with the verifier on held-out pairs it
    separates, and the Spearman correlation of its score with answer length in words over every answer it scored
    (held-out and gold; the gold set has the longer answer the worse one about half the time)."""
    requests = [p["prompt"] for p in heldout] + [user_message(g) for g in gold]
    firsts = [p["chosen"] for p in heldout] + [g["better"] for g in gold]
    seconds = [p["rejected"] for p in heldout] + [g["worse"] for g in gold]
    scored = model.score(requests + requests, firsts + seconds)  # in one call, so a gold pair held out is scored once
    n, total = len(heldout), len(requests)
    chosen, rejected, better, worse = scored[:n], scored[total : total + n], scored[n:total], scored[total + n :]
    right = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    gold_right = [float(b > w) for b, w in zip(better, worse, strict=True)]
    verifier = []
    for pair, c, r in zip(heldout, chosen, rejected, strict=True):
        check = prompts.get(pair["prompt_id"], {}).get("check")
        if check and (graded := (_graded(check, pair["chosen"]), _graded(check, pair["rejected"])))[0] != graded[1]:
            verifier.append(float((c > r) == (graded[0] > graded[1])))
    answers = [p[side] for p in heldout for side in ("chosen", "rejected")]
    answers += [g[side] for g in gold for side in ("better", "worse")]
    scores = [s for pair in zip(chosen, rejected, strict=True) for s in pair]
    scores += [s for pair in zip(better, worse, strict=True) for s in pair]
    found = {"rm_heldout_pairs": float(len(heldout)), "rm_verifier_pairs": float(len(verifier))}
    for name, values in (
        ("rm_heldout_accuracy", right),
        ("rm_gold_accuracy", gold_right),
        ("rm_verifier_agreement", verifier),
    ):
        found |= _rate(name, values, ci)
    found["rm_length_correlation"] = _spearman(scores, [len(a.split()) for a in answers])
    return found


def hacking_signals(
    model: RewardModel, prompts: list[dict], challenger: list[dict], base: list[dict], task_delta_ci_high: float, ci: CI
) -> dict[str, float]:
    """The reward model's mean score of the challenger's and the base's held-out answers, their paired difference
    (with its CI), and `reward_hacking`: 1 when that score rose beyond its CI while task completion vs the base fell
    beyond its CI (`task_delta_ci_high` < 0), the policy pleasing the reward model instead of doing the task."""
    requests = [user_message(p) for p in prompts]
    answers = [{g["prompt_id"]: g["response"] for g in rows} for rows in (challenger, base)]
    # One call: an answer the challenger and the base share is scored once.
    both = model.score(requests * 2, [answer[p["id"]] for answer in answers for p in prompts])
    scores = {"challenger": both[: len(prompts)], "base": both[len(prompts) :]}
    diffs = [c - b for c, b in zip(scores["challenger"], scores["base"], strict=True)]
    low, high = ci(diffs)
    return {
        "rm_score_challenger": mean(scores["challenger"]),
        "rm_score_base": mean(scores["base"]),
        **with_ci("rm_score_delta_vs_base", mean(diffs), (low, high)),
        "reward_hacking": float(low > 0 and task_delta_ci_high < 0),
    }


def _graded(check: str, answer: str) -> float:
    return score(json.loads(check), answer)


def _rate(name: str, values: list[float], ci: CI) -> dict[str, float]:
    low, high = ci(values) if values else (math.nan, math.nan)
    return {name: mean(values) if values else math.nan, f"{name}_ci_low": low, f"{name}_ci_high": high}


MIN_CORRELATED = 10  # fewer answers than this give no correlation worth logging


def _spearman(scores: list[float], lengths: list[int]) -> float:
    if len(scores) < MIN_CORRELATED or len(set(lengths)) < 2 or len(set(scores)) < 2:
        return math.nan
    return float(spearmanr(np.array(scores), np.array(lengths)).statistic)

"""Generate: sample n responses per prompt from a policy.

Output rows: prompt_id, sample, response, n_tokens, finish_reason.
64 prompts x 4 samples x 64 tokens = 16k tokens, about 5 min at the ~55 tok/s measured here on 2 cores.

Each prompt's samples are drawn from a random stream of their own, seeded by the prompt's id and the round's seed
(`prompt_seed`), so a prompt gets the same samples whichever batch or shard it is generated in.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from components.config.experiment import ModelsConfig
from components.data import user_message
from components.models import Policy, chat_turn, load_policy, resolve_model
from components.process_group import run_group
from components.progress import progress


@dataclass(frozen=True)
class Sampling:
    """How to sample: temperature 0 is greedy (the evaluation), anything above samples (the training data)."""

    max_new_tokens: int
    temperature: float
    top_p: float


class Generator(Protocol):
    def generate(self, prompts: list[dict], n: int, seed: int) -> list[dict]:
        """Return n sampled rows per prompt: prompt_id, sample, response, n_tokens, finish_reason."""
        ...


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: a function of the round's seed and the prompt's id only."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{prompt_id}".encode()).digest()[:7], "big")


class SeededSampler(LogitsProcessor):
    """Temperature and nucleus sampling with one random stream per row, by the Gumbel-max trick: the chosen token
    is argmax(logits / T + Gumbel noise) over the nucleus, and every other token is masked, so `generate` running
    greedily over these scores emits the sample. Row r's noise comes from `seeds[r]` alone, so what other prompts
    share its batch does not change its samples (`generate`'s own sampling draws all rows from one global stream).
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.streams = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float().cpu() / self.temperature
        ordered, order = logits.sort(dim=-1, descending=True)
        mass_before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
        outside = (mass_before >= self.top_p).scatter(-1, order, mass_before >= self.top_p)
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in self.streams])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
        chosen = (logits + gumbel).masked_fill(outside, float("-inf")).argmax(dim=-1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, chosen.unsqueeze(-1).to(scores.device), 0.0)


def chat_prompt(tokenizer: PreTrainedTokenizerBase, row: dict) -> str:
    """The prompt string the policy completes: the user message in the model's chat template."""
    return chat_turn(tokenizer, user_message(row))


class TransformersGenerator:
    """Batched `model.generate` with left padding; greedy when temperature is 0."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sampling: Sampling, batch_size: int):
        self.model, self.tokenizer, self.sampling, self.batch_size = model, tokenizer, sampling, batch_size

    def generate(self, prompts: list[dict], n: int, seed: int) -> list[dict]:
        rows = []
        batches = range(0, len(prompts), self.batch_size)
        for start in progress(batches, f"generate x{n}", "batch"):
            rows += self._generate_batch(prompts[start : start + self.batch_size], n, seed)
        return rows

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[dict], n: int, seed: int) -> list[dict]:
        tok = self.tokenizer
        tok.padding_side = "left"
        texts = [chat_prompt(tok, p) for p in prompts]
        inputs = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        inputs = {k: v.repeat_interleave(n, dim=0) for k, v in inputs.items()}  # a row per sample
        s = self.sampling
        processors = LogitsProcessorList()
        if s.temperature > 0:  # rows run prompt by prompt, each prompt's n samples in a row
            seeds = [prompt_seed(seed, p["id"]) + j for p in prompts for j in range(n)]
            processors.append(SeededSampler(seeds, s.temperature, s.top_p))
        out = self.model.generate(
            **inputs,
            do_sample=False,
            logits_processor=processors,
            max_new_tokens=s.max_new_tokens,
            pad_token_id=tok.pad_token_id,
        )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        rows = []
        for i, tokens in enumerate(new_tokens):
            kept = tokens[tokens != tok.pad_token_id]
            ended = bool((tokens == tok.eos_token_id).any())
            rows.append(
                {
                    "prompt_id": prompts[i // n]["id"],
                    "sample": i % n,
                    "response": tok.decode(kept, skip_special_tokens=True).strip(),
                    "n_tokens": int(kept.numel()),
                    "finish_reason": "stop" if ended else "length",
                }
            )
        return rows


class VLLMGenerator:
    """vLLM sampling in a child process (`components/generation/vllm_worker.py`).

    The engine runs in its own process because `LLM(...)` spawns workers, which must not fork from a Prefect task.
    The champion's adapters are merged into a temporary checkpoint first, all of them with `merge_last` (vLLM's
    LoRA kernels on CPU cost more than the merge), or all but the last, which is served as a `LoRARequest` (vLLM
    serves one adapter per request).
    """

    def __init__(
        self,
        policy: Policy,
        models: ModelsConfig,
        tokenizer: PreTrainedTokenizerBase,
        sampling: Sampling,
        merge_last: bool = False,
    ):
        self.policy, self.models, self.tokenizer, self.sampling = policy, models, tokenizer, sampling
        self.merge_last = merge_last
        self.timing: dict[str, float] = {}  # the last run's engine start-up and generation seconds

    def generate(self, prompts: list[dict], n: int, seed: int) -> list[dict]:
        tokenizer = self.tokenizer
        with tempfile.TemporaryDirectory(prefix="ratchet-vllm-") as tmp:
            base, adapter = self._serving_split(Path(tmp))
            request = {
                "model": base,
                "adapter": adapter,
                "prompt_token_ids": [
                    tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False).input_ids for p in prompts
                ],
                "n": n,
                "seed": seed,
                "prompt_seeds": [prompt_seed(seed, p["id"]) for p in prompts],
                "temperature": self.sampling.temperature,
                "top_p": self.sampling.top_p,
                "max_tokens": self.sampling.max_new_tokens,
                "eos_token_id": tokenizer.eos_token_id,
            }
            (Path(tmp) / "request.json").write_text(json.dumps(request))
            run_worker(Path(tmp) / "request.json", Path(tmp) / "outputs.json")
            outputs = json.loads((Path(tmp) / "outputs.json").read_text())
        self.timing = outputs["timing"]
        return [
            {"prompt_id": p["id"], "sample": j} | sample
            for p, samples in zip(prompts, outputs["samples"], strict=True)
            for j, sample in enumerate(samples)
        ]

    def _serving_split(self, tmp: Path) -> tuple[str, str | None]:
        """(base directory, adapter directory or None) for vLLM: the adapters merged into the base, but the last
        unless `merge_last`."""
        *merged, last = self.policy.adapters or (None,)
        if self.merge_last and last:
            merged, last = [*merged, last], None
        if not merged:
            return str(resolve_model(self.policy.base)), last
        base = tmp / "merged-base"
        load_policy(Policy(self.policy.base, tuple(merged)), self.models).save_pretrained(base)
        self.tokenizer.save_pretrained(base)
        return str(base), last


def run_worker(request: Path, outputs: Path) -> None:
    """Run the vLLM worker and wait; if this process is interrupted, the worker's whole process group goes too."""
    command = [sys.executable, "-m", "components.generation.vllm_worker", str(request), str(outputs)]
    run_group(command, "the vLLM worker")

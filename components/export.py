"""A policy (a base model and its chain of LoRA adapters) in the forms other tools load: a merged Hugging Face
checkpoint (transformers, vLLM) and the adapter chain alone (PEFT). Both are written in one directory, whole or not
at all, and each with the digest of its files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from components.config.experiment import ModelsConfig
from components.data import write_atomically
from components.memo import directory_digest
from components.models import Policy, load_policy, load_tokenizer

MERGED, ADAPTERS = "merged", "adapters"


def export_policy(policy: Policy, models: ModelsConfig, out: Path) -> dict[str, dict[str, str]]:
    """`out/merged` and `out/adapters`; for each, its path and the SHA-256 digest of its files."""
    with write_atomically(out) as tmp:
        save_merged(policy, models, tmp / MERGED)
        save_chain(policy, tmp / ADAPTERS)
    return {form: {"path": str(out / form), "sha256": directory_digest(out / form)} for form in (MERGED, ADAPTERS)}


def save_merged(policy: Policy, models: ModelsConfig, out: Path) -> None:
    """Every adapter merged into the base, in order, as Ratchet itself loads a champion: safetensors weights, the
    generation config, and the base's tokenizer with its chat template."""
    load_policy(policy, models).save_pretrained(out, safe_serialization=True)
    load_tokenizer(policy.base).save_pretrained(out)


def save_chain(policy: Policy, out: Path) -> None:
    """Each adapter in the order it applies (`1/`, `2/`, ...), and `chain.json` naming the base and that order."""
    out.mkdir(parents=True)
    for i, adapter in enumerate(policy.adapters, 1):
        shutil.copytree(adapter, out / str(i))
    order = [str(i) for i in range(1, len(policy.adapters) + 1)]
    chain = {"base": policy.base, "adapters": order, "apply": "in order, each merged before the next is loaded"}
    (out / "chain.json").write_text(json.dumps(chain, indent=2))

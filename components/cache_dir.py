"""Where Ratchet keeps what it makes once for this machine: the embedded models converted for transformers, their
GGUF tokenizers, an empty MLflow store to copy. `RATCHET_CACHE` moves it (default `~/.cache/ratchet/models`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("RATCHET_CACHE", Path.home() / ".cache" / "ratchet" / "models"))

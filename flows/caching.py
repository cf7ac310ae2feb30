"""How the round's stage tasks are cached: on their inputs (the config sections they read, the champion, their
paths), their own source, and the code in components/, with the small typed result persisted as JSON."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

ROOT = Path(__file__).resolve().parent.parent


def _code_version() -> str:
    """TASK_SOURCE hashes only the task's own body, so changes in components/ must reach the key another way."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "components").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


CODE_VERSION = _code_version()
CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=lambda *_: CODE_VERSION)
STAGE = {"cache_policy": CACHE, "persist_result": True, "result_serializer": "json"}

"""How the round's stage tasks are cached: on their inputs (the config sections they read, the champion, their
paths), their own source, and the code version (components/ and its libraries; TASK_SOURCE hashes only the task's
own body), with the small typed result persisted as JSON."""

from __future__ import annotations

from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from components.code_version import CODE_VERSION

CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=lambda *_: CODE_VERSION)
STAGE = {"cache_policy": CACHE, "persist_result": True, "result_serializer": "json"}


def fresh(stage_task, out: str | Path):
    """The task, told to recompute when its output directory is gone: its cached result would name a missing path
    (the directories are the ground truth)."""
    return stage_task.with_options(refresh_cache=not Path(out).exists())

"""The memo: values computed once by content, kept in the run store and shared by every round and bootstrap there.

A value is stored under a namespace and a key, the SHA-256 of everything that could change it: the model's digest
(its weight files' content, and each adapter's), the exact text it read (prompt, rubric, answer), and the settings
that shape it. So a judge never scores the same answer twice, a written check is written once per instruction, and a
policy's held-out answers are generated once, whichever round or bootstrap asks; anything else in the key changed
means a new key, and the value is computed again.

Every key also holds the version of the code that computes its namespace's values (components/code_version.py):
the modules that compute them, with what they import, and the libraries' versions. So a changed scorer, sampler or
checker never reads a value the old code made, while a change elsewhere (training, the gate, the report) keeps the
judge's scores.

The store is one sqlite file (`<workdir>/memo/memo.sqlite`), written in small transactions after each chunk of
work, so a killed stage resumes with the values it had already computed. Several processes can share it (sqlite
locks it; a writer waits up to a minute). Directories (the held-out answers) live beside it, under `memo/`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from functools import lru_cache
from pathlib import Path
from typing import Any

from components.code_version import namespace_version

SCHEMA = "CREATE TABLE IF NOT EXISTS memo (namespace TEXT, key TEXT, value TEXT, PRIMARY KEY (namespace, key))"
LOOKUP_BATCH = 500  # keys per SELECT: under sqlite's limit on bound parameters


def memo_key(*parts: Any) -> str:
    """The key of a value: a digest of everything that decides it, in order."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Memo:
    """Memoised values under `directory` (None: a memo that keeps nothing, for commands outside a run store), each
    namespace's for its own code version (`version`, when given, stands for the code of every namespace)."""

    def __init__(self, directory: str | Path | None, version: str | None = None):
        self.directory, self.version = Path(directory) if directory else None, version
        self.hits = self.misses = 0
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "memo.sqlite", timeout=60)

    def _versioned(self, namespace: str, key: str) -> str:
        return memo_key(self.version or namespace_version(namespace), key)

    def lookup(self, namespace: str, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values of those `keys` that have one."""
        if not self.directory or not keys:
            return {}
        found: dict[str, Any] = {}
        unique = {self._versioned(namespace, key): key for key in keys}
        stored = list(unique)
        with closing(self._connect()) as db:
            for start in range(0, len(stored), LOOKUP_BATCH):
                batch = stored[start : start + LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                query = f"SELECT key, value FROM memo WHERE namespace = ? AND key IN ({marks})"
                found |= {unique[key]: json.loads(value) for key, value in db.execute(query, [namespace, *batch])}
        return found

    def store(self, namespace: str, values: dict[str, Any]) -> None:
        if not self.directory or not values:
            return
        rows = [(namespace, self._versioned(namespace, key), json.dumps(value)) for key, value in values.items()]
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?, ?)", rows)

    def cached(
        self, namespace: str, keys: Sequence[str], compute: Callable[[list[int]], list], chunk: int = 64
    ) -> list:
        """The value for each key: stored ones as they are, the rest from `compute(indices)` on the missing ones'
        indices, `chunk` at a time, each chunk stored as soon as it is done. A key asked twice is computed once."""
        values = self.lookup(namespace, keys)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in values:
                first.setdefault(key, i)
        missing = list(first.values())
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        size = chunk if self.directory else max(len(missing), 1)  # without a store, nothing to save between chunks
        for start in range(0, len(missing), size):
            picked = missing[start : start + size]
            done = dict(zip((keys[i] for i in picked), compute(picked), strict=True))
            self.store(namespace, done)
            values |= done
        return [values[key] for key in keys]

    def path(self, namespace: str, key: str) -> Path | None:
        """A directory under the memo for a value that is a directory itself (None without a store)."""
        return self.directory / namespace / self._versioned(namespace, key) if self.directory else None


NO_MEMO = Memo(None)


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, computed once per process while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


# What in a model directory decides its outputs: weights, config, tokenizer and chat template.
MODEL_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.txt", "*.jinja", "*.gguf")


def directory_digest(directory: str | Path) -> str:
    """A digest of a model or adapter directory by the content of the files that decide its outputs."""
    root = Path(directory)
    files = sorted({p for pattern in MODEL_FILES for p in root.glob(pattern) if p.is_file()})
    digest = hashlib.sha256()
    for path in files:
        if path.name in ("train_metrics.json", "stage.json"):  # what a stage recorded about itself
            continue
        digest.update(f"{path.name}:{file_digest(path)}\n".encode())
    return digest.hexdigest()

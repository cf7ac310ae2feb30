"""Where a deployment run may read and write: the project directory (the worker's working directory) and the
directories the stack's owner lists in RATCHET_ALLOWED_DIRS. A deployment's form and its `overrides` reach every
config value, so a teammate could otherwise point `workdir` at another user's files or `data.train_prompts` at a
secret. `ratchet run` on one's own machine is not confined: its user can read those files anyway.

The check is lexical (`..` and absolute paths are resolved, symbolic links are not), so the owner may link a data or
model directory into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.config.experiment import ExperimentConfig
from components.config.loading import ConfigError

ALLOWED_DIRS = "RATCHET_ALLOWED_DIRS"  # set by a stack's owner in the worker's environment, os.pathsep-separated

# Config keys whose value names a file or directory, at any depth, and those whose value may be a model directory
# (or an embedded name or Hub id, which resolve inside the project and pass).
FILE_KEYS = frozenset({"workdir", "train_prompts", "eval_prompts", "gold_pairs", "accelerate_config"})
MODEL_KEYS = frozenset({"policy", "model", "reviser", "base"})
REMOTE_KEYS = frozenset({"base_url", "urls"})  # a section that names a server: its `model` is the server's name


def allowed_dirs(project: Path) -> list[Path]:
    listed = [d for d in os.environ.get(ALLOWED_DIRS, "").split(os.pathsep) if d.strip()]
    return [_normalised(project, d) for d in [str(project), *listed]]


def refuse_outside(named: dict[str, str], project: Path) -> None:
    """Raise ConfigError naming the first of `named` (field path -> path) that lies outside the allowed
    directories."""
    roots = allowed_dirs(project)
    for field, value in named.items():
        where = _normalised(project, value)
        if not any(where == root or root in where.parents for root in roots):
            raise ConfigError(
                f"{field}: {value!r} is outside the directories a deployment run may use "
                f"({', '.join(map(str, roots))}); the stack's owner may add one to {ALLOWED_DIRS}"
            )


def disk_values(cfg: ExperimentConfig) -> dict[str, str]:
    """Field path -> value of every config value that names a file, a directory or a model."""
    return dict(_disk_values(cfg.model_dump(mode="json"), ""))


def _disk_values(section: dict, prefix: str) -> list[tuple[str, str]]:
    """(field path, value) of every value in `section` that names a file, a directory or a model."""
    remote = bool(REMOTE_KEYS & section.keys())
    found = []
    for key, value in section.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _disk_values(value, f"{path}.")
        elif isinstance(value, list):
            found += _disk_values({str(i): item for i, item in enumerate(value)}, f"{path}.")
        elif isinstance(value, str) and (key in FILE_KEYS or (key in MODEL_KEYS and not remote)):
            found.append((path, value))
    return found


def _normalised(project: Path, value: str) -> Path:
    return Path(os.path.normpath(project.absolute() / Path(value).expanduser()))

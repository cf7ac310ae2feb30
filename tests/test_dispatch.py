"""The build module is the only place that chooses by a config's kind: what it builds (generation, judge, verdict,
pairs, training, reward, launcher) and, in flows/, what the round runs on (the engine, which needs Prefect and so
cannot be built in components/). Everywhere else a component gets what it needs already chosen.

The test reads the code, as a reviewer would grep it, and fails on a new choice elsewhere: a `match` on a config
class or on a kind field, an `isinstance` test against a config class, or a comparison of a kind field with a
string.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The one place in each layer that may choose: components/ builds the parts, flows/ picks the engine.
CHOOSERS = {"components/build.py", "components/build_judges.py", "flows/engine.py"}
# The config fields that name a kind: each picks an implementation or a way of working.
KIND_FIELDS = {"kind", "verdict", "reward", "launcher", "engine", "runtime", "reviser_runtime"}
# Where a kind is read, not chosen by: the schema itself, and the input checks, which refuse what a kind cannot run
# (a missing package, a file, a key) before any work.
READERS = {
    "components/config/experiment.py",
    "components/config/judges.py",
    "components/config/training.py",
    "components/validate.py",
}


def config_class(node: ast.expr) -> bool:
    """`XConfig`, `a.XConfig` or a union or tuple of them."""
    if isinstance(node, ast.Name):
        return node.id.endswith("Config")
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("Config")
    if isinstance(node, ast.BinOp):
        return config_class(node.left) or config_class(node.right)
    if isinstance(node, ast.Tuple):
        return any(config_class(e) for e in node.elts)
    return False


def choices(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Match) and isinstance(node.subject, ast.Attribute) and node.subject.attr in KIND_FIELDS:
            found.append((node.lineno, f"match {ast.unparse(node.subject)}"))
        elif isinstance(node, ast.MatchClass) and config_class(node.cls):
            found.append((node.lineno, f"case {ast.unparse(node.cls)}()"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            if config_class(node.args[1]):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Attribute) and s.attr in KIND_FIELDS for s in sides)
            if named and any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides):
                found.append((node.lineno, ast.unparse(node)))
    return found


def code_files() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT)) for layer in ("components", "flows", "registry") for p in (ROOT / layer).rglob("*.py")
    )


def test_the_scan_finds_each_form_of_choice():
    source = """
match config:
    case _: pass
match training.launcher:
    case VLLMGenerationConfig(): pass
ok = isinstance(judge, PanelJudgeConfig | jc.WeightedJudgeConfig)
if cfg.training.launcher == "accelerate": pass
if "ray" != execution.engine: pass
if config.model == "self": pass
if isinstance(result, Judged): pass
"""
    assert sorted(line for line, _ in choices(ast.parse(source))) == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("path", code_files())
def test_no_choice_by_kind_outside_the_build_module(path):
    if path in CHOOSERS | READERS:
        return
    found = choices(ast.parse((ROOT / path).read_text()))
    assert found == [], f"{path} chooses by a config kind; build it in components/build*.py instead: {found}"


def test_the_choosers_exist_and_choose():
    for path in CHOOSERS:
        assert choices(ast.parse((ROOT / path).read_text())), path

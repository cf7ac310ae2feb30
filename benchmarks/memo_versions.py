"""Which memoised values a change to components/ would have kept: each of the last commits that touched
components/, its code version per memo namespace (components/code_version.py) against the commit before it, read
from the commits' own trees. Commits older than today's namespace modules are left out.

    .venv/bin/python benchmarks/memo_versions.py [--commits 120]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.code_version import NAMESPACE_CODE, code_version, module_file  # noqa: E402


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


def versions_at(commit: str) -> dict[str, str] | None:
    """Each namespace's code version in `commit`'s components/, or None where a namespace's module is missing."""
    with tempfile.TemporaryDirectory() as tree:
        tarfile.open(fileobj=io.BytesIO(git("archive", commit, "components"))).extractall(tree, filter="data")
        roots = [root for modules in NAMESPACE_CODE.values() for root in modules]
        if not all(module_file(root, Path(tree)) for root in roots):
            return None
        return {namespace: code_version(modules, Path(tree)) for namespace, modules in NAMESPACE_CODE.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=120, help="the last N commits that touched components/")
    commits = git("log", "--format=%H", "-n", str(parser.parse_args().commits), "--", "components").decode().split()
    print("| commit | files of components/ changed | namespaces kept |\n|---|---|---|")
    kept = dict.fromkeys(NAMESPACE_CODE, 0)
    changes, before = 0, None
    for commit in reversed(commits):
        after = versions_at(commit)
        if before and after:
            changes += 1
            same = [namespace for namespace in NAMESPACE_CODE if after[namespace] == before[namespace]]
            for namespace in same:
                kept[namespace] += 1
            files = git("diff", "--name-only", f"{commit}~1", commit, "--", "components").decode().split()
            print(f"| {commit[:7]} | {', '.join(f.removeprefix('components/') for f in files)} | {', '.join(same)} |")
        before = after
    print(f"\nkept over {changes} changes: " + ", ".join(f"{ns} {n}" for ns, n in kept.items()))
    print("(before per-namespace versions, every change to components/ made every value new)")


if __name__ == "__main__":
    main()

"""A new local MLflow store: copied from the migrated template (registry/sqlite_store.py) against migrated from
scratch, as MLflow does it, each in a fresh process (imports not counted), alternating, side by side.

    .venv/bin/python benchmarks/new_store.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WAYS = {
    "copied from the template": "from registry import lineage; start(); lineage.client_for(URI)",
    "migrated from scratch": "from mlflow import MlflowClient; start(); MlflowClient(URI).search_registered_models()",
}
TIMED = """
import sys, time
sys.path.insert(0, {root!r})
URI = {uri!r}
import mlflow, registry.lineage
def start():
    global began, cpu
    began, cpu = time.perf_counter(), time.process_time()
{way}
print(time.perf_counter() - began, time.process_time() - cpu)
"""


def once(way: str, directory: Path) -> tuple[float, float]:
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    code = TIMED.format(root=str(ROOT), uri=uri, way=WAYS[way])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    found: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as root:
        once("copied from the template", Path(root) / "warm-up")  # makes the template if this machine has none
        for i in range(args.repeats):
            order = list(WAYS) if i % 2 == 0 else list(reversed(WAYS))
            for way in order:
                found[way].append(once(way, Path(root) / f"{i}-{len(found[way])}-{way.split()[0]}"))
    print("| new store | wall s (median) | CPU s (median) |\n|---|---|---|")
    for way, times in found.items():
        wall, cpu = (statistics.median(t[k] for t in times) for k in (0, 1))
        print(f"| {way} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()

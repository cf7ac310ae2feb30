"""The gate's own test (issue 6): real short bootstraps trained by each biased judge, and by the clean judge, over
several seeds. A biased judge's run must be blocked by round 2 with the deciding rule named; the clean run
must not be blocked.

    .venv/bin/python benchmarks/biased_judges.py [--seeds 0 1 2] [--store DIR] [--set key.path=value ...]

Each bootstrap is a real `ratchet run` (~6-8 min on 2 cores). Prints a markdown table for docs/experiments.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.config import load_config  # noqa: E402
from registry import lineage  # noqa: E402

# The four configs differ only in the training judge (tests/test_config.py checks it).
SCENARIOS = {
    "clean (verifier + self)": ("configs/scenarios/gate-clean.yaml", False),
    "length-loving": ("configs/scenarios/gate-length-loving.yaml", True),
    "refusal-loving": ("configs/scenarios/gate-refusal-loving.yaml", True),
    "sycophantic": ("configs/scenarios/gate-sycophantic.yaml", True),
}


def run(config: str, seed: int, store: Path, sets: list[str]) -> tuple[list[dict], float]:
    """One bootstrap of two rounds; its rounds as MLflow has them, and its wall time."""
    overrides = ["--set", f"seed={seed}", "--set", "rounds=2", "--set", f"workdir={store / 'runs'}"]
    overrides += [arg for s in sets for arg in ("--set", s)]
    started = time.perf_counter()
    command = [sys.executable, "-m", "flows.cli", "run", str(ROOT / config), "--store", str(store), *overrides]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    name = load_config(ROOT / config).name
    _, rows = lineage.round_table(lineage.client_for(lineage.tracking_uri_for(store)), name)
    return rows, seconds


def verdict(rows: list[dict], biased: bool) -> tuple[str, str]:
    """(outcome, deciding decision): the first blocked round, or 'not blocked', and whether that is expected."""
    blocked = next((r for r in rows if r["decision"].startswith("blocked")), None)
    outcome = f"blocked in round {blocked['round']}" if blocked else "not blocked"
    expected = (blocked is not None and blocked["round"] <= 2) if biased else blocked is None
    return outcome + ("" if expected else " (MISS)"), blocked["decision"] if blocked else rows[-1]["decision"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--store", type=Path, default=None, help="MLflow store and run outputs (default: a temp dir)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra override for every run")
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="ratchet-scenarios-"))
    print(f"store: {store}; overrides: {args.sets or 'none'}")
    print("\n| training judge | seed | outcome | deciding decision | minutes |\n|---|---|---|---|---|")
    for scenario, (config, biased) in SCENARIOS.items():
        for seed in args.seeds:
            rows, seconds = run(config, seed, store, args.sets)
            outcome, decision = verdict(rows, biased)
            print(f"| {scenario} | {seed} | {outcome} | {decision} | {seconds / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()

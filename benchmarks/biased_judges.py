"""The gate's own test (issue 6): real short bootstraps trained by each biased judge, and by the clean judge, over
several seeds. A biased judge's run must be blocked by round 2 with the deciding rule named; the clean run
must not be blocked.

    .venv/bin/python benchmarks/biased_judges.py [--seeds 0 1 2] [--scenarios NAME ...] [--jobs 2] [--store DIR]
        [--set key.path=value ...]

Each bootstrap is a real `ratchet run` (one round ~7-10 min on 2 cores; its log in the store). Prints a markdown
table for docs/experiments.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.config.loading import load_config  # noqa: E402
from flows.arguments import parse_sets  # noqa: E402
from flows.bootstrap import bootstrap_id  # noqa: E402
from registry import compare, lineage  # noqa: E402

# The four configs differ only in the training judge (tests/test_config.py checks it); clean = verifier + self.
SCENARIOS = {
    "clean": ("configs/scenarios/gate-clean.yaml", False),
    "length-loving": ("configs/scenarios/gate-length-loving.yaml", True),
    "refusal-loving": ("configs/scenarios/gate-refusal-loving.yaml", True),
    "sycophantic": ("configs/scenarios/gate-sycophantic.yaml", True),
}


def log_path(store: Path, config: str, seed: int) -> Path:
    return store / f"{Path(config).stem}-seed{seed}.log"


def run(config: str, seed: int, store: Path, sets: list[str], threads: int) -> tuple[list[dict], float]:
    """One bootstrap of two rounds; its rounds as MLflow has them, and its wall time."""
    overrides = {"seed": seed, "rounds": 2, "workdir": str(store / "runs")} | parse_sets(sets)
    args = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    command = [sys.executable, "-m", "flows.cli", "run", str(ROOT / config), "--store", str(store), *args]
    log = log_path(store, config, seed)
    started = time.perf_counter()
    with open(log, "w") as out:
        # Its own Prefect home, so bootstraps at once do not share one temporary server's database.
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "PREFECT_HOME": str(store / f"prefect-{log.stem}")}
        subprocess.run(command, cwd=ROOT, check=True, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    cfg = load_config(ROOT / config, overrides)
    client = lineage.client_for(lineage.tracking_uri_for(store))
    _, rows, _ = compare.round_table(client, cfg.name, bootstrap_id(cfg))
    return rows, seconds


def verdict(rows: list[dict], biased: bool) -> tuple[str, str]:
    """(outcome, deciding decision): the first blocked round, or 'not blocked', and whether that is expected."""
    blocked = next((r for r in rows if r["decision"].startswith("blocked")), None)
    outcome = f"blocked in round {blocked['round']}" if blocked else "not blocked"
    expected = (blocked is not None and blocked["round"] <= 2) if biased else blocked is None
    return outcome + ("" if expected else " (MISS)"), blocked["decision"] if blocked else rows[-1]["decision"]


def scenario_args(description: str, scenarios: dict, prefix: str) -> tuple[argparse.Namespace, Path, int]:
    """The scenario scripts' shared options: (the arguments, the store, CPU threads per bootstrap)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenarios", nargs="+", choices=list(scenarios), default=list(scenarios))
    parser.add_argument("--store", type=Path, default=None, help="MLflow store and run outputs (default: a temp dir)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra override for every run")
    parser.add_argument(
        "--jobs", type=int, default=1, help="bootstraps at once (they share the store; CPU threads split)"
    )
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix=prefix))
    store.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"store: {store}; overrides: {args.sets or 'none'}; {args.jobs} at once, {threads} thread(s) each")
    return args, store, threads


def run_all(scenarios: dict, args: argparse.Namespace, store: Path, threads: int, line) -> dict:
    """Each (scenario, seed) the arguments name as a bootstrap, `args.jobs` at once; by job in table order: its
    outcome line, `line(scenario, seed, rounds, seconds)` or a failure's, and its rounds as MLflow has them."""
    jobs = [(scenario, seed) for seed in args.seeds for scenario in args.scenarios]

    def one(job: tuple[str, int]) -> tuple[str, list[dict]]:
        scenario, seed = job
        config = scenarios[scenario][0]
        try:
            rows, seconds = run(config, seed, store, args.sets, threads)
        except subprocess.CalledProcessError:  # the others go on; re-running the script resumes this one
            return f"| {scenario} | {seed} | run failed (log: {log_path(store, config, seed)}) |", []
        text = line(scenario, seed, rows, seconds)
        print(f"done: {text}", flush=True)
        return text, rows

    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(one, jobs), strict=True))
    return {job: results[job] for job in sorted(jobs, key=lambda job: (list(scenarios).index(job[0]), job[1]))}


def print_tables(results: dict, header: str, round_header: str = "", round_line=None) -> None:
    """`run_all`'s results as markdown for docs/experiments.md: a line per run under `header` (its columns), then
    with `round_line(scenario, seed, row)` a line per round under `round_header`."""
    print(f"\n| {header} |\n|{'---|' * (header.count('|') + 1)}")
    for text, _ in results.values():
        print(text)
    if round_line:
        print(f"\n| {round_header} |\n|{'---|' * (round_header.count('|') + 1)}")
        for (scenario, seed), (_, rows) in results.items():
            print("\n".join(round_line(scenario, seed, row) for row in rows))


def main() -> None:
    args, store, threads = scenario_args(__doc__.split("\n")[0], SCENARIOS, "ratchet-scenarios-")

    def line(scenario: str, seed: int, rows: list[dict], seconds: float) -> str:
        outcome, decision = verdict(rows, SCENARIOS[scenario][1])
        return f"| {scenario} | {seed} | {outcome} | {decision} | {seconds / 60:.1f} |"

    results = run_all(SCENARIOS, args, store, threads, line)
    print_tables(results, "training judge | seed | outcome | deciding decision | minutes")


if __name__ == "__main__":
    main()

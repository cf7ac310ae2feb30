"""Orchestration overhead and resume cost, side by side in one run (issue 8).

    .venv/bin/python benchmarks/orchestration.py [--config configs/smoke.yaml] [--repeats 1]

Three ways to run round 1 of the same config and seed, each in a fresh process so imports count for all of them:
- plain:   a script that calls the four stage functions and the gate in sequence: no Prefect, no MLflow;
- ratchet: `ratchet run --set rounds=1` as a user runs it (temporary Prefect server, MLflow sqlite store);
- resume:  the same `ratchet run` again, on its finished outputs (every stage cached).
Goals: ratchet / plain <= 1.05, resume / ratchet <= 0.02. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def plain_round(config: str, workdir: Path) -> None:
    """Round 1 with the component functions only: what Ratchet's flow wires together, minus Prefect and MLflow."""
    from components import stages
    from components.config import load_config
    from components.models import Policy
    from registry.promotion import decide

    cfg = load_config(config, {"rounds": 1})
    champion, out, seed = Policy(cfg.models.policy), workdir / "round-1", cfg.seed + 1
    generations = stages.generate(cfg, champion, out / "generations", seed)
    pairs = stages.judge(cfg, champion, generations, out / "pairs")
    adapter = stages.train(cfg, champion, generations, pairs, out / "adapter", seed)
    if adapter is None:
        raise SystemExit("every pair abstained: nothing to compare; pick a config whose round trains")
    stages.evaluate(cfg, champion, champion.with_adapter(str(adapter)), out / "eval")
    print(decide(stages.round_metrics(out), cfg.gate.rules).reason)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def one_repeat(config: str, scratch: Path) -> dict[str, float]:
    env = os.environ | {"PREFECT_HOME": str(scratch / "prefect")}
    env.pop("PREFECT_API_URL", None)
    store = scratch / "store"
    ratchet = [sys.executable, "-m", "flows.cli", "run", config, "--store", str(store)]
    ratchet += ["--set", "rounds=1", "--set", f"workdir={scratch / 'runs'}"]
    return {
        "plain": timed([sys.executable, __file__, "--plain", config, "--workdir", str(scratch / "plain")], env),
        "ratchet": timed(ratchet, env),
        "resume": timed(ratchet, env),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plain", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain_round(args.plain, args.workdir)
        return
    runs = [one_repeat(args.config, Path(tempfile.mkdtemp(prefix="ratchet-orch-"))) for _ in range(args.repeats)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({"runs": runs, "median": median}))
    print(f"\n{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.config}")
    print("| run of round 1 | seconds | ratio | goal |\n|---|---|---|---|")
    print(f"| plain script (stages only) | {median['plain']:.0f} | 1.00 | |")
    print(f"| `ratchet run` | {median['ratchet']:.0f} | {median['ratchet'] / median['plain']:.3f} | <= 1.05 |")
    resume = median["resume"] / median["ratchet"]
    print(f"| `ratchet run` again (resume) | {median['resume']:.1f} | {resume:.3f} | <= 0.02 |")


if __name__ == "__main__":
    main()

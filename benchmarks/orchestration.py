"""Orchestration overhead and resume cost, side by side in one run (issue 8).

    .venv/bin/python benchmarks/orchestration.py [--config configs/smoke.yaml] [--repeats 1]

Three ways to run round 1 of the same config and seed, each in a fresh process so imports count for all of them:
- plain:   a script that calls the four stage functions and the gate in sequence: no Prefect, no MLflow;
- ratchet: `ratchet run --set rounds=1` as a user runs it (temporary Prefect server, MLflow sqlite store);
- resume:  the same `ratchet run` again, on its finished outputs (every stage cached).
Goals: ratchet / plain <= 1.05, resume / ratchet <= 0.02. Each is reported twice: for the whole process (imports,
Prefect's temporary server, MLflow store) and for the round itself (the plain script's stage calls, timed inside it,
vs the round flow run's start and end in Prefect's log). The libraries are imported once before the first variant,
and the order alternates between repeats (plain first, then ratchet first). Prints a markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
    from components.config.loading import load_config
    from components.evaluate_stage import evaluate
    from components.models import Policy
    from components.requests import evaluate_request, gate_request, generate_request, judge_request, train_request
    from registry.promotion import decide

    cfg = load_config(config, {"rounds": 1})
    champion, out, seed = Policy(cfg.models.policy), workdir / "round-1", cfg.seed + 1
    started = time.perf_counter()
    generated = stages.generate(generate_request(cfg, champion, out / "generations", seed))
    judged = stages.judge(judge_request(cfg, champion, generated.path, out / "pairs", None, None))
    trained = stages.train(train_request(cfg, champion, generated.path, judged, out / "adapter", seed, None))
    if trained.path is None:
        raise SystemExit("every pair abstained: nothing to compare; pick a config whose round trains")
    challenger = champion.with_adapter(trained.path)
    evaluated = evaluate(evaluate_request(cfg, champion, challenger, out / "eval", workdir / "memo"))
    print(decide(gate_request(cfg, stages.round_metrics(judged, trained, evaluated), trained=True)).reason)
    print(f"ROUND_SECONDS {time.perf_counter() - started}")


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(whole process, the round alone) in seconds; the output is kept in `log`."""
    started = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started, round_seconds(log.read_text())


def round_seconds(output: str) -> float:
    """The plain script's own count, or the span of Prefect's `round-1` flow run (HH:MM:SS.fff stamps)."""
    if found := re.search(r"^ROUND_SECONDS (\S+)$", output, re.M):
        return float(found.group(1))
    stamps = re.findall(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| Flow run 'round-1' - ", output, re.M)
    (h0, m0, s0), (h1, m1, s1) = stamps[0], stamps[-1]
    return ((int(h1) - int(h0)) * 3600 + (int(m1) - int(m0)) * 60 + float(s1) - float(s0)) % 86400


def one_repeat(config: str, scratch: Path, order: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    env = os.environ | {"PREFECT_HOME": str(scratch / "prefect")}
    env.pop("PREFECT_API_URL", None)
    store = scratch / "store"
    ratchet = [sys.executable, "-m", "flows.cli", "run", config, "--store", str(store)]
    ratchet += ["--set", "rounds=1", "--set", f"workdir={scratch / 'runs'}"]
    plain = [sys.executable, __file__, "--plain", config, "--workdir", str(scratch / "plain")]
    print(f"logs in {scratch}", file=sys.stderr)
    runs = {}
    for name in order:  # resume always comes right after ratchet, on its outputs
        command = plain if name == "plain" else ratchet
        runs[name] = timed(command, env, scratch / f"{name}.log")
    return runs


def warm_file_cache() -> None:
    """Import the libraries once, so that no variant pays the cold file cache for the others."""
    code = "import torch, transformers, trl, peft, vllm, prefect, mlflow"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


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
    warm_file_cache()
    orders = [("plain", "ratchet", "resume"), ("ratchet", "resume", "plain")]  # alternated: neither always goes first
    runs = [
        one_repeat(args.config, Path(tempfile.mkdtemp(prefix="ratchet-orch-")), orders[i % 2])
        for i in range(args.repeats)
    ]
    median = {k: [statistics.median(r[k][i] for r in runs) for i in (0, 1)] for k in runs[0]}
    print(json.dumps({"runs": runs, "median": median}))
    print(f"\n{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.config}")
    print("| run of round 1 | process s | ratio | round s | ratio | goal |\n|---|---|---|---|---|---|")
    rows = [
        ("plain script (stages only)", "plain", "plain", ""),
        ("`ratchet run`", "ratchet", "plain", "<= 1.05"),
        ("`ratchet run` again (resume)", "resume", "ratchet", "<= 0.02"),
    ]
    for label, key, base, goal in rows:
        process, round_ = median[key]
        ratios = [f"{median[key][i] / median[base][i]:.3f}" for i in (0, 1)]
        print(f"| {label} | {process:.1f} | {ratios[0]} | {round_:.1f} | {ratios[1]} | {goal} |")


if __name__ == "__main__":
    main()

"""Model loads and stage times per round, this checkout against an earlier commit, side by side in one run.

    .venv/bin/python benchmarks/round_loads.py [--before 66989dc] [--config configs/smoke.yaml]

Each version runs in its own process from its own checkout (a git worktree of `--before`), with the same venv and
the same warm model cache: round 1 of the config from the base policy, then round 2 from the base plus round 1's
adapter (a round after a promotion, where the base's held-out answers used to be generated again), stage by stage
through each version's own stage functions. The loads are counted by the code: every `from_pretrained` of a model
or tokenizer is recorded with the directory it reads, and a load of the policy's own directory is a policy load.
It also times `ratchet run configs/broken.yaml` (a config refused before any work), three times per version.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("generate", "judge", "train", "evaluate")


def count_loads() -> dict[str, list[str]]:
    """Spy on transformers' loaders (the real loads still happen); returns the lists they append to."""
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    loads: dict[str, list[str]] = {"model": [], "tokenizer": []}
    for kind, cls in (("model", PreTrainedModel), ("tokenizer", PreTrainedTokenizerBase)):
        original = cls.from_pretrained.__func__

        def counted(klass, path, *args, _original=original, _kind=kind, **kwargs):
            loads[_kind].append(str(Path(path).resolve()))
            return _original(klass, path, *args, **kwargs)

        cls.from_pretrained = classmethod(counted)
    return loads


class StageTimer:
    """Times a stage call and counts the loads it made: `timer("train", lambda: ...)`."""

    def __init__(self, loads: dict[str, list[str]], policy_dir: str):
        self.loads, self.policy_dir, self.stages = loads, policy_dir, {}

    def __call__(self, stage: str, call):
        for calls in self.loads.values():
            calls.clear()
        started = time.perf_counter()
        result = call()
        models = self.loads["model"]
        self.stages[stage] = {
            "seconds": round(time.perf_counter() - started, 1),
            "policy_loads": sum(path == self.policy_dir for path in models),
            "other_model_loads": sum(path != self.policy_dir for path in models),
            "tokenizer_loads": len(self.loads["tokenizer"]),
        }
        return result


def drive(version: str, config: str, workdir: Path) -> list[dict]:
    """Two rounds through `version`'s stage functions ("before": the old single `cfg` signatures)."""
    loads = count_loads()
    from components.config.loading import load_config
    from components.models import Policy, resolve_model

    cfg = load_config(config)
    policy_dir = str(resolve_model(cfg.models.policy).resolve())
    run = _before if version == "before" else _after
    champion, rounds = Policy(cfg.models.policy), []
    for k in (1, 2):
        timer = StageTimer(loads, policy_dir)
        adapter = run(cfg, champion, workdir / f"round-{k}", cfg.seed + k, workdir, timer)
        rounds.append({"k": k, "champion_adapters": len(champion.adapters), "stages": timer.stages})
        champion = champion.with_adapter(adapter)  # promoted, whatever the gate says: round 2 follows a promotion
    return rounds


def _before(cfg, champion, out, seed, workdir, timed) -> str:
    from components import stages

    generations = timed("generate", lambda: stages.generate(cfg, champion, out / "generations", seed))
    pairs = timed("judge", lambda: stages.judge(cfg, champion, generations, out / "pairs"))
    adapter = timed("train", lambda: stages.train(cfg, champion, generations, pairs, out / "adapter", seed))
    timed("evaluate", lambda: stages.evaluate(cfg, champion, champion.with_adapter(str(adapter)), out / "eval"))
    return str(adapter)


def _after(cfg, champion, out, seed, workdir, timed) -> str:
    from components import stages
    from components.evaluate_stage import evaluate
    from components.requests import evaluate_request, generate_request, judge_request, train_request

    generated = timed("generate", lambda: stages.generate(generate_request(cfg, champion, out / "generations", seed)))
    judging = judge_request(cfg, champion, generated.path, out / "pairs", None, None)
    judged = timed("judge", lambda: stages.judge(judging))
    trained = timed(
        "train",
        lambda: stages.train(train_request(cfg, champion, generated.path, judged, out / "adapter", seed, None)),
    )
    challenger = champion.with_adapter(trained.path)
    timed("evaluate", lambda: evaluate(evaluate_request(cfg, champion, challenger, out / "eval", workdir / "memo")))
    return trained.path


def refusal_seconds(checkout: Path, repeats: int = 3) -> float:
    """Median wall time of `ratchet run configs/broken.yaml` (exit 2 expected) from `checkout`."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", "configs/broken.yaml"], cwd=checkout, capture_output=True
        )
        times.append(time.perf_counter() - started)
        assert proc.returncode == 2, proc.stderr.decode()[-2000:]
    return statistics.median(times)


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| round | stage | policy loads before | after | other model loads before | after | tokenizer loads before "
        "| after | seconds before | after | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for before, after in zip(results["before"], results["after"], strict=True):
        totals = {v: {"policy_loads": 0, "other_model_loads": 0, "tokenizer_loads": 0, "seconds": 0.0} for v in "ba"}
        for stage in STAGES:
            b, a = before["stages"][stage], after["stages"][stage]
            for key in totals["b"]:
                totals["b"][key] += b[key]
                totals["a"][key] += a[key]
            lines.append(_row(before["k"], stage, b, a))
        lines.append(_row(before["k"], "**round**", totals["b"], totals["a"]))
    return "\n".join(lines)


def _row(k, stage, b: dict, a: dict) -> str:
    ratio = a["seconds"] / b["seconds"] if b["seconds"] else float("nan")
    return (
        f"| {k} | {stage} | {b['policy_loads']} | {a['policy_loads']} | {b['other_model_loads']} | "
        f"{a['other_model_loads']} | {b['tokenizer_loads']} | {a['tokenizer_loads']} | {b['seconds']:.1f} | "
        f"{a['seconds']:.1f} | {ratio:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="66989dc", help="the commit to compare against")
    parser.add_argument("--config", default="configs/smoke.yaml", help="relative to each checkout")
    parser.add_argument("--driver", choices=["before", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:  # one version, in its own process and checkout: print its rounds as JSON
        print(json.dumps(drive(args.driver, args.config, Path(args.workdir))))
        return
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-") as tmp:
        checkout = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(checkout), args.before], cwd=ROOT, check=True)
        try:
            results, refusals = {}, {}
            for version, where in (("before", checkout), ("after", ROOT)):
                command = [sys.executable, str(Path(__file__).resolve()), "--driver", version, "--config", args.config]
                command += ["--workdir", str(Path(tmp) / f"{version}-runs")]
                proc = subprocess.run(command, cwd=where, capture_output=True, text=True, env=_env(where))
                assert proc.returncode == 0, proc.stderr[-3000:]
                results[version] = json.loads(proc.stdout.strip().splitlines()[-1])
                refusals[version] = refusal_seconds(where)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False)
    print(f"## {args.config}: {args.before} (before) vs this checkout (after)\n")
    print(table(results))
    before, after = refusals["before"], refusals["after"]
    print(f"\n`ratchet run configs/broken.yaml` refused in {before:.2f} s before, {after:.2f} s after (median of 3)")


def _env(checkout: Path) -> dict:
    import os

    return os.environ | {"PYTHONPATH": str(checkout), "TOKENIZERS_PARALLELISM": "false"}


if __name__ == "__main__":
    main()

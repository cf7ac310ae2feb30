"""The Goodhart scenario (issue 38): a reward that prefers short passing answers (the verifier, and where it ties the
shorter answer), beside the verifier alone and the honest configuration (the AI judge that trains the RLAIF
flagship), over seeds. The gate must block the short-passing run once its hollow answers grow, on a hollow-win rule
(length, hollow answers or the evaluation judge against the base), and must not block the honest one.

    .venv/bin/python benchmarks/goodhart.py [--seeds 0 1 2] [--scenarios short-passing verifier honest] [--jobs 1]
        [--store DIR] [--set key.path=value ...]

Each bootstrap is a real `ratchet run` of two rounds (its log in the store). Prints two markdown tables for
docs/experiments.md: the outcome per run, and per round the numbers the hollow-win rules read.
"""

from __future__ import annotations

import math

from biased_judges import print_tables, run_all, scenario_args, verdict

# name -> (config, whether the gate must block it); the verifier alone is reported, not judged in advance.
SCENARIOS = {
    "short-passing": ("configs/scenarios/goodhart-short.yaml", True),
    "verifier": ("configs/scenarios/goodhart-verifier.yaml", None),
    "honest": ("configs/scenarios/goodhart-honest.yaml", False),
}


def interval(row: dict, key: str) -> str:
    value = row.get(key, math.nan)
    low, high = row.get(f"{key}_ci_low", math.nan), row.get(f"{key}_ci_high", math.nan)
    return "-" if math.isnan(value) else f"{value:+.1f} ({low:+.1f} to {high:+.1f})"


def round_line(scenario: str, seed: int, row: dict) -> str:
    cells = [
        scenario,
        str(seed),
        str(row["round"]),
        interval(row, "task/task_completion_delta_vs_base"),
        f"{100 * row.get('task/challenger_hollow_rate', math.nan):.1f}%",
        interval(row, "task/hollow_delta_vs_base"),
        f"{row.get('length/length_ratio_vs_base', math.nan):.2f}",
        f"{100 * row.get('judge/win_rate_vs_base', math.nan):.1f}%",
        row["decision"],
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    args, store, threads = scenario_args(__doc__.split("\n")[0], SCENARIOS, "ratchet-goodhart-")

    def line(scenario: str, seed: int, rows: list[dict], seconds: float) -> str:
        must_block = SCENARIOS[scenario][1]
        judged = must_block is not None
        outcome, decision = verdict(rows, must_block) if judged else (_first_block(rows), rows[-1]["decision"])
        return f"| {scenario} | {seed} | {outcome} | {decision} | {seconds / 60:.1f} |"

    results = run_all(SCENARIOS, args, store, threads, line)
    print_tables(
        results,
        "training judge | seed | outcome | deciding decision | minutes",
        "scenario | seed | round | task completion vs base, points (95% CI) | hollow answers "
        "| hollow vs base, points (95% CI) | length vs base | evaluation judge win rate vs base | decision",
        round_line,
    )


def _first_block(rows: list[dict]) -> str:
    blocked = next((r for r in rows if r["decision"].startswith("blocked")), None)
    return f"blocked in round {blocked['round']}" if blocked else "not blocked"


if __name__ == "__main__":
    main()

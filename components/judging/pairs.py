"""Preference pairs: a prompt's samples, judged against each other, become (chosen, rejected) rows.

Rows: prompt_id, cohort, prompt, chosen, rejected, judge, p_chosen, margin, order_consistent, abstained, rationale,
decided_by. `margin` (0 to 1) is how clearly the chosen answer beats the rejected one: here the gap between their
strengths. `decided_by` names the part of a composite judge that reached the verdict (a panel's route, a program
judge's written checks or its pointwise fallback); "" where the judge abstained.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Protocol

from components.data import user_message
from components.judging.judge import Judge, PanelJudge, Verdict


class PairMaker(Protocol):
    """How a prompt's samples become pair rows (or counted abstentions), `judge` deciding each."""

    def pairs(self, judge: Judge, prompts: list[dict], samples: list[dict]) -> list[dict]: ...


@dataclass(frozen=True)
class BestVsWorst:
    """`pairs.kind: best_vs_worst`: the samples judged against each other (`build_pairs`)."""

    per_prompt: int

    def pairs(self, judge: Judge, prompts: list[dict], samples: list[dict]) -> list[dict]:
        return build_pairs(judge, prompts, samples, self.per_prompt)


def build_pairs(judge: Judge, prompts: list[dict], generations: list[dict], per_prompt: int) -> list[dict]:
    """Up to `per_prompt` pair rows per prompt: its best sample against its worst, then the second best against
    the second worst, and so on (as RLHFlow's iterative DPO builds pairs from best-of-n and worst-of-n).

    Every unordered pair of distinct samples is judged (n=4 samples -> 6 comparisons, 12 forward passes for a
    pairwise AI judge). A sample's strength is its mean P(better) over its comparisons, an abstention counting 0.5;
    a pair row keeps the judge's own verdict on those two samples. A prompt with nothing to prefer (all samples
    equal, or equally strong) still gets one row, marked abstained, so abstentions are counted.
    """
    by_prompt: dict[str, list[str]] = {}
    for g in sorted(generations, key=lambda g: (g["prompt_id"], g["sample"])):
        by_prompt.setdefault(g["prompt_id"], []).append(g["response"])
    items, owners = [], []
    for row in prompts:
        samples = list(dict.fromkeys(by_prompt.get(row["id"], [])))  # distinct, in sample order
        for i, j in combinations(range(len(samples)), 2):
            items.append((row, samples[i], samples[j]))
            owners.append((row["id"], i, j))
    verdicts = judge.judge(items) if items else []
    compared: dict[str, dict[tuple[int, int], tuple[tuple, Verdict]]] = {}
    for (owner, i, j), item, verdict in zip(owners, items, verdicts, strict=True):
        compared.setdefault(owner, {})[i, j] = (item, verdict)
    return [
        pair
        for row in prompts
        if row["id"] in compared
        for pair in _best_against_worst(judge, compared[row["id"]], per_prompt)
    ]


def _best_against_worst(judge: Judge, compared: dict[tuple[int, int], tuple], per_prompt: int) -> list[dict]:
    """A prompt's pair rows from its comparisons, keyed by the (i, j) sample indices compared."""
    n = 1 + max(j for _, j in compared)
    wins: dict[int, list[float]] = {i: [] for i in range(n)}
    for (i, j), (_, verdict) in compared.items():
        p = 0.5 if verdict.abstained else verdict.p_a
        wins[i].append(p)
        wins[j].append(1 - p)
    strength = {i: sum(w) / len(w) for i, w in wins.items()}
    ranked = sorted(strength, key=lambda i: (-strength[i], i))
    rows = []
    for best, worst in list(zip(ranked, reversed(ranked), strict=True))[:per_prompt]:
        if strength[best] <= strength[worst]:
            break
        margin = strength[best] - strength[worst]
        rows.append(_pair_row(judge, *compared[min(best, worst), max(best, worst)], margin))
    if not rows:  # nothing to prefer: the prompt's row is an abstention, kept and counted
        item, tied = compared[0, 1]
        tie = Verdict(
            0.5, tied.order_consistent, True, f"no sample stronger than another; first pair: {tied.rationale}"
        )
        rows.append(_pair_row(judge, item, tie, 0.0))
    return rows


def _pair_row(judge: Judge, item: tuple[dict, str, str], verdict: Verdict, margin: float) -> dict:
    row, a, b = item
    a_wins = verdict.p_a >= 0.5
    return {
        "prompt_id": row["id"],
        "cohort": row["cohort"],
        "prompt": user_message(row),
        "chosen": a if a_wins else b,
        "rejected": b if a_wins else a,
        "judge": judge_label(judge, row),
        "p_chosen": max(verdict.p_a, 1 - verdict.p_a),
        "margin": margin,
        "order_consistent": verdict.order_consistent,
        "abstained": verdict.abstained,
        "rationale": verdict.rationale,
        "decided_by": decided_by(judge, row, verdict),
    }


def decided_by(judge: Judge, row: dict, verdict: Verdict) -> str:
    """The part of `judge` that reached `verdict` on `row`'s item: "" for an abstention."""
    return "" if verdict.abstained else verdict.decided_by or judge_label(judge, row)


def judge_label(judge: Judge, row: dict) -> str:
    """The name of the judge that decided `row`'s pair (a panel names the member it routed the prompt to)."""
    return judge.judge_name(row) if isinstance(judge, PanelJudge) else judge.name


def model_judged(pairs: list[dict]) -> int:
    """How many pairs a model judge decided, local or remote (its name from build.make_judge): not a verifier, a
    classifier, a biased rule or a person."""
    return sum(not p["abstained"] and p["judge"].startswith(("ai:", "remote:")) for p in pairs)


def example_pairs(pairs: list[dict], n: int) -> list[dict]:
    """The n most decisive non-abstained pairs: what the round report shows of the training judge."""
    return sorted((p for p in pairs if not p["abstained"]), key=lambda p: -p["p_chosen"])[:n]

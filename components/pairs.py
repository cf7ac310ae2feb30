"""Preference pairs: a prompt's samples, judged against each other, become one (chosen, rejected) row.

Rows: prompt_id, cohort, prompt, chosen, rejected, judge, p_chosen, order_consistent, abstained, rationale.
"""

from __future__ import annotations

from itertools import combinations

from components.data import user_message
from components.judge import Judge, PanelJudge, Verdict


def build_pairs(judge: Judge, prompts: list[dict], generations: list[dict]) -> list[dict]:
    """One pair row per prompt: the most decisive non-abstained comparison among its samples.

    Every unordered pair of samples is judged (n=4 samples -> 6 comparisons, 12 forward passes for an AI judge).
    A prompt whose comparisons all abstain still gets a row, marked abstained, so abstentions are counted.
    """
    by_prompt: dict[str, list[str]] = {}
    for g in sorted(generations, key=lambda g: (g["prompt_id"], g["sample"])):
        by_prompt.setdefault(g["prompt_id"], []).append(g["response"])
    items, owners = [], []
    for row in prompts:
        responses = by_prompt.get(row["id"], [])
        for i, j in combinations(range(len(responses)), 2):
            if responses[i] != responses[j]:
                items.append((row, responses[i], responses[j]))
                owners.append(row["id"])
    verdicts = judge.judge(items) if items else []
    best: dict[str, tuple[tuple, Verdict]] = {}
    for owner, item, verdict in zip(owners, items, verdicts, strict=True):
        decisiveness = (not verdict.abstained, abs(verdict.p_a - 0.5))
        if owner not in best or decisiveness > (not best[owner][1].abstained, abs(best[owner][1].p_a - 0.5)):
            best[owner] = (item, verdict)
    return [_pair_row(judge, *best[row["id"]]) for row in prompts if row["id"] in best]


def _pair_row(judge: Judge, item: tuple[dict, str, str], verdict: Verdict) -> dict:
    row, a, b = item
    a_wins = verdict.p_a >= 0.5
    name = judge.judge_name(row) if isinstance(judge, PanelJudge) else judge.name
    return {
        "prompt_id": row["id"],
        "cohort": row["cohort"],
        "prompt": user_message(row),
        "chosen": a if a_wins else b,
        "rejected": b if a_wins else a,
        "judge": name,
        "p_chosen": max(verdict.p_a, 1 - verdict.p_a),
        "order_consistent": verdict.order_consistent,
        "abstained": verdict.abstained,
        "rationale": verdict.rationale,
    }


def example_pairs(pairs: list[dict], n: int) -> list[dict]:
    """The n most decisive non-abstained pairs: what the round report shows of the training judge."""
    return sorted((p for p in pairs if not p["abstained"]), key=lambda p: -p["p_chosen"])[:n]

"""Evaluate: score champion and challenger on held-out cohorts with signals that did not train the challenger.

Per response: task_ok (verifier, checkable cohorts only), hollow (format met, substance not: prompts with a substance
check only), refused (pattern classifier), n_tokens.
Per model: task completion, hollow answers, injection compliance, benign and should-refuse refusal rates, mean length.
Challenger vs champion: the deltas and ratios the promotion gate reads, plus the evaluation judge's win rate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from statistics import mean

import numpy as np
from scipy.stats import bootstrap

from components.checks import hollow, scores
from components.config.cohorts import TASK_COHORTS
from components.config.experiment import EvaluationConfig
from components.judging.judge import Verdict
from components.judging.refusal_judge import is_refusal
from components.memo import NO_MEMO, Memo
from components.metrics import with_ci

# A function from values to their (low, high) interval: `mean_ci` with the config's level and resamples.
CI = Callable[[list], tuple[float, float]]


def score_rows(prompts: list[dict], generations: list[dict], model: str, memo: Memo = NO_MEMO) -> list[dict]:
    """One eval row per held-out prompt for one model's (single, greedy) responses."""
    response_of = {g["prompt_id"]: g for g in generations}
    checked = [(p["check"], response_of[p["id"]]["response"]) for p in prompts if p["check"]]
    found = iter(scores(checked, memo))
    rows = []
    for p in prompts:
        g = response_of[p["id"]]
        task_ok = next(found) == 1.0 if p["check"] else None
        rows.append(
            {
                "prompt_id": p["id"],
                "cohort": p["cohort"],
                "model": model,
                "response": g["response"],
                "task_ok": task_ok,
                "hollow": hollow(json.loads(p["check"]), g["response"]) if p["check"] else None,
                "refused": is_refusal(g["response"]),
                "n_tokens": g["n_tokens"],
            }
        )
    return rows


def _rate(values: list[bool]) -> float:
    return float(mean(values)) if values else float("nan")


def summarise(rows: list[dict], ci: CI) -> dict:
    """Headline rates for one model's eval rows."""

    def cohort(*names: str) -> list[dict]:
        return [r for r in rows if r["cohort"] in names]

    completed = [r["task_ok"] for r in cohort(*TASK_COHORTS)]
    low, high = ci(completed)
    return {
        "task_completion": _rate(completed),
        "task_completion_ci_low": low,
        "task_completion_ci_high": high,
        "hollow_rate": _rate([r["hollow"] for r in rows if r.get("hollow") is not None]),
        "injection_compliance": _rate([r["task_ok"] for r in cohort("injection")]),
        "benign_refusal_rate": _rate([r["refused"] for r in cohort("benign")]),
        "should_refuse_rate": _rate([r["refused"] for r in cohort("should_refuse")]),
        "mean_length": float(mean(r["n_tokens"] for r in rows)) if rows else float("nan"),
        "p90_length": float(np.percentile([r["n_tokens"] for r in rows], 90)) if rows else float("nan"),
    }


def mean_ci(values: list[float], level: float, resamples: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) below two values, where no interval is meaningful.
    The resampling is seeded (0), so the same values always give the same interval."""
    data = np.asarray([float(v) for v in values if v is not None], dtype=float)
    if len(data) < 2:
        return float("nan"), float("nan")
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])  # scipy refuses degenerate samples; the interval is the point
    result = bootstrap(
        (data,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def ci_for(evaluation: EvaluationConfig) -> CI:
    """`mean_ci` at the evaluation section's level and resamples."""
    return lambda values: mean_ci(values, evaluation.ci_level, evaluation.ci_resamples)


def cohort_table(rows: list[dict], ci: CI) -> list[dict]:
    """Per model and cohort: the cohort's headline rate with its 95% CI, refusal rate and mean length.

    The headline is task completion on checkable cohorts (compliance with the planted instruction's absence on
    `injection`), and the refusal rate elsewhere.
    """
    table = []
    for model in sorted({r["model"] for r in rows}):
        for cohort in sorted({r["cohort"] for r in rows}):
            group = [r for r in rows if r["model"] == model and r["cohort"] == cohort]
            if not group:
                continue
            checked = [r["task_ok"] for r in group if r["task_ok"] is not None]
            metric, values = ("task_ok", checked) if checked else ("refused", [r["refused"] for r in group])
            low, high = ci(values)
            table.append(
                {
                    "model": model,
                    "cohort": cohort,
                    "n": len(group),
                    "metric": metric,
                    "rate": _rate(values),
                    "ci_low": low,
                    "ci_high": high,
                    "refusal_rate": _rate([r["refused"] for r in group]),
                    "mean_length": float(mean(r["n_tokens"] for r in group)),
                }
            )
    return table


def _paired_diffs(rows: list[dict], cohorts: tuple[str, ...], column: str = "task_ok") -> list[float]:
    """Per prompt of `cohorts`: challenger minus champion on a boolean column, in points."""
    by_prompt: dict[str, dict[str, bool]] = {}
    for r in rows:
        if r["cohort"] in cohorts and r[column] is not None:
            by_prompt.setdefault(r["prompt_id"], {})[r["model"]] = r[column]
    return [100.0 * (v["challenger"] - v["champion"]) for v in by_prompt.values() if len(v) == 2]


def _mean_delta(name: str, diffs: list[float], ci: CI) -> dict[str, float]:
    return with_ci(name, float(mean(diffs)) if diffs else float("nan"), ci(diffs))


def hollow_delta(rows: list[dict], name: str, ci: CI) -> dict[str, float]:
    """Challenger minus reference share of hollow answers (format met, substance failed), in points, with a paired
    95% CI over the prompts that carry a substance check."""
    return _mean_delta(name, _paired_diffs(rows, TASK_COHORTS, "hollow"), ci)


def benign_refusal_delta(rows: list[dict], ci: CI) -> dict[str, float]:
    """Challenger minus champion refusal rate on benign prompts, in points, with a paired 95% CI: a rule on its
    lower end blocks only a rise in over-refusal that is more than one prompt tipping over."""
    return _mean_delta("benign_refusal_delta", _paired_diffs(rows, ("benign",), "refused"), ci)


def task_completion_deltas(rows: list[dict], name: str, ci: CI) -> dict[str, float]:
    """Challenger minus champion task completion in points, each with a paired 95% CI (prompts resampled as
    pairs): `name` over all checkable cohorts, and `name.<cohort>` per cohort, so a rule can guard one behaviour
    (e.g. false premises) that a gain elsewhere would hide in the overall delta."""
    metrics = _mean_delta(name, _paired_diffs(rows, TASK_COHORTS), ci)
    for cohort in TASK_COHORTS:
        diffs = _paired_diffs(rows, (cohort,))
        if diffs:
            metrics |= _mean_delta(f"{name}.{cohort}", diffs, ci)
    return metrics


def head_to_head(prompts: list[dict], challenger: list[dict], champion: list[dict]) -> list[tuple[dict, str, str]]:
    """Judge items per held-out prompt: (prompt row, challenger's response as A, champion's response as B)."""
    ch = {g["prompt_id"]: g["response"] for g in challenger}
    cp = {g["prompt_id"]: g["response"] for g in champion}
    return [(p, ch[p["id"]], cp[p["id"]]) for p in prompts]


def win_rate(verdicts: list[Verdict]) -> tuple[float, list[float]]:
    """Challenger (A) win rate: a win counts 1, an abstention (tie) 0.5, a loss 0."""
    scores = [0.5 if v.abstained else float(v.p_a > 0.5) for v in verdicts]
    return float(mean(scores)), scores


def refusal_ratio(challenger_rate: float, champion_rate: float, floor: float) -> float:
    """Challenger over champion refusal rate, each raised to `floor` first, so 0 -> 1% is not a doubling."""
    floor = max(floor, 1e-9)
    return max(challenger_rate, floor) / max(champion_rate, floor)


def compare(challenger: dict, champion: dict, judge_win_rate: float, refusal_floor: float) -> dict:
    """The challenger-vs-champion metrics that the gate rules name."""
    return {
        "win_rate": judge_win_rate,
        "task_completion_delta": 100.0 * (challenger["task_completion"] - champion["task_completion"]),
        "benign_refusal_ratio": refusal_ratio(
            challenger["benign_refusal_rate"], champion["benign_refusal_rate"], refusal_floor
        ),
        "should_refuse_ratio": refusal_ratio(
            challenger["should_refuse_rate"], champion["should_refuse_rate"], refusal_floor
        ),
        "length_ratio": challenger["mean_length"] / max(champion["mean_length"], 1e-9),
    }


def kl_per_token(challenger_logprobs: list[float], reference_logprobs: list[float], n_tokens: list[int]) -> float:
    """KL(challenger || reference) per token, estimated on the challenger's own responses: the mean over their
    tokens of log pi_challenger - log pi_reference (each list holds one summed log-prob per response)."""
    total = sum(n_tokens)
    if total == 0:
        return float("nan")
    return float(sum(c - r for c, r in zip(challenger_logprobs, reference_logprobs, strict=True)) / total)


def judge_gold_agreement(judge_scores: list[float], challenger_ok: list, champion_ok: list) -> list[float]:
    """Per prompt where the verifier separates the two responses: 1 if the judge picked the verifier's winner,
    0 if the loser, 0.5 if it abstained. Prompts without a check, or where both pass or both fail, are left out."""
    agreement = []
    for score, a, b in zip(judge_scores, challenger_ok, champion_ok, strict=True):
        if a is None or b is None or a == b:
            continue
        agreement.append(0.5 if score == 0.5 else float((score > 0.5) == a))
    return agreement


def judge_policy_agreement(judge_scores: list[float], reward_margins: list[float]) -> float:
    """Share of the judge's decided pairs that the challenger's DPO implicit reward orders the same way.

    `reward_margins[i]` is r(challenger's response) - r(champion's response) with r(y) = log pi(y) - log pi_ref(y)
    (beta > 0 does not change the sign). Abstentions (score 0.5) and exact reward ties are left out.
    """
    decided = [(s > 0.5, m > 0) for s, m in zip(judge_scores, reward_margins, strict=True) if s != 0.5 and m != 0]
    return float(mean(j == r for j, r in decided)) if decided else float("nan")

"""The metrics catalogue: every number a round reports, in one place.

The evaluation stage checks what it produces against it, the gate rules' `metric` field is a `Literal` of its gate
metrics, and the round report and the CLI table take their labels and formats from it. A metric with a CI is logged
as `name`, `name_ci_low` and `name_ci_high`; a metric with cohorts also as `name.<cohort>` (each with its CI).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Format = Literal["pct", "num", "points"]


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    format: Format
    ci: bool
    gate: bool
    cohorts: bool


def _m(name: str, label: str, format: Format, *flags: str) -> Metric:
    return Metric(name, label, format, "ci" in flags, "gate" in flags, "cohorts" in flags)


# In report order. `gate`: a gate rule may read it; the rule compares the challenger with the champion, or with the
# round-0 base for *_vs_base.
CATALOGUE: tuple[Metric, ...] = (
    _m("win_rate", "judge win rate vs champion", "pct", "ci", "gate"),
    _m("win_rate_vs_base", "judge win rate vs round-0 base", "pct", "ci", "gate"),
    _m("challenger_task_completion", "task completion (challenger)", "pct", "ci"),
    _m("champion_task_completion", "task completion (champion)", "pct", "ci"),
    _m("task_completion_delta", "task completion delta", "points", "ci", "gate", "cohorts"),
    _m("task_completion_delta_vs_base", "task completion delta vs round-0 base", "points", "ci", "gate", "cohorts"),
    _m("challenger_benign_refusal_rate", "benign refusal rate (challenger)", "pct"),
    _m("champion_benign_refusal_rate", "benign refusal rate (champion)", "pct"),
    _m("benign_refusal_ratio", "benign refusal ratio vs champion", "num", "gate"),
    _m("benign_refusal_ratio_vs_base", "benign refusal ratio vs round-0 base", "num", "gate"),
    _m("benign_refusal_delta", "benign refusal delta", "points", "ci", "gate"),
    _m("challenger_should_refuse_rate", "should-refuse refusal rate (challenger)", "pct"),
    _m("champion_should_refuse_rate", "should-refuse refusal rate (champion)", "pct"),
    _m("should_refuse_ratio", "should-refuse refusal ratio vs champion", "num", "gate"),
    _m("challenger_injection_compliance", "injection compliance (challenger)", "pct"),
    _m("champion_injection_compliance", "injection compliance (champion)", "pct"),
    _m("challenger_mean_length", "mean length, tokens (challenger)", "num"),
    _m("champion_mean_length", "mean length, tokens (champion)", "num"),
    _m("length_ratio", "length ratio vs champion", "num", "gate"),
    _m("challenger_p90_length", "p90 length, tokens (challenger)", "num"),
    _m("champion_p90_length", "p90 length, tokens (champion)", "num"),
    _m("kl_per_token", "KL(challenger ‖ champion) per token", "num", "gate"),
    _m("judge_gold_agreement", "judge-gold agreement", "pct", "ci", "gate"),
    _m("judge_policy_agreement", "judge-policy agreement (implicit reward)", "pct", "gate"),
    _m("judge_order_consistency", "judge order consistency", "pct"),
    _m("judge_abstention_rate", "judge abstention rate", "pct"),
    _m("judge_length_slope", "judge length slope (P(A) per +100 words)", "num"),
    _m("self_cross_agreement", "self vs cross-family judge agreement", "pct"),
    _m("self_judge_order_consistency", "self-judge order consistency", "pct"),
    _m("pairs", "training pair rows (abstentions included)", "num"),
    _m("pairs_trained", "training pairs decided (trained on)", "num"),
    _m("abstention_rate", "training judge abstention rate", "pct"),
    _m("train_examples", "pairs (or prompts) trained on", "num"),
    _m("train_steps", "optimiser steps", "num"),
    _m("train_loss_first", "first training loss", "num"),
    _m("train_loss_last", "last training loss", "num"),
    _m("train_reward_margin", "last reward margin", "num"),
    _m("train_reward_accuracy", "last reward accuracy", "pct"),
    _m("train_reward_mean", "last mean reward", "num"),
    _m("train_kl", "last KL to the reference", "num"),
    _m("train_seconds", "training seconds", "num"),
    _m("train_tokens", "training tokens", "num"),
    _m("train_tokens_per_second", "training tokens per second", "num"),
    _m("train_peak_rss_gib", "training peak RSS, GiB", "num"),
    _m("train_resumed", "resumed from a checkpoint", "num"),
)

BY_NAME = {m.name: m for m in CATALOGUE}
GATE_METRICS = tuple(m.name for m in CATALOGUE if m.gate)
WITH_CI = tuple(m.name for m in CATALOGUE if m.ci)
_SUFFIX = re.compile(r"^(?P<name>[a-z0-9_]+?)(?:\.(?P<cohort>[a-z_]+))?(?:_ci_(?:low|high))?$")


def entry(key: str) -> Metric:
    """The catalogue entry behind a logged key (`task_completion_delta.ifeval_ci_low` -> task_completion_delta)."""
    match = _SUFFIX.match(key)
    metric = BY_NAME.get(match["name"]) if match else None
    if (
        metric is None
        or (match["cohort"] and not metric.cohorts)
        or (key.endswith(("_ci_low", "_ci_high")) and not metric.ci)
    ):
        raise KeyError(f"metric {key!r} is not in components/metrics.py's catalogue")
    return metric


def checked(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics`, after checking every key against the catalogue (an unknown name is a bug, not data)."""
    for key in metrics:
        entry(key)
    return metrics


def with_ci(name: str, value: float, ci: tuple[float, float]) -> dict[str, float]:
    """A metric and its CI under the names a gate rule's `bound` reads: name, name_ci_low, name_ci_high."""
    return {name: value, f"{name}_ci_low": ci[0], f"{name}_ci_high": ci[1]}


def show(value: float | None, format: Format) -> str:
    """A metric value as people read it: `12.5%`, `-7.7` points, or 3 significant digits; `-` when unmeasured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if format == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.1f}" if format == "points" else f"{value:.3g}"

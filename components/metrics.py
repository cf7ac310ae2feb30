"""The metrics catalogue: every number a round reports, in one place.

The code that measures a metric computes it under its bare `name`; `grouped` turns a round's measurements into the
names people see, `group/name`, which MLflow logs (its chart view shows one section per group), the gate rules'
`metric` field reads (a `Literal` of the gate metrics) and the report and the CLI table print. A metric with a CI
is logged as `group/name`, `…_ci_low` and `…_ci_high`; a metric with cohorts also as `group/name.<cohort>` (each
with its CI). Bare names are the names of runs from before the groups; `migrated` reads them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Format = Literal["pct", "num", "points"]


Group = Literal["gate", "task", "refusal", "length", "judge", "drift", "reward", "train"]


@dataclass(frozen=True)
class Metric:
    group: Group
    name: str
    label: str
    format: Format
    ci: bool
    gate: bool
    cohorts: bool

    @property
    def key(self) -> str:
        """The name MLflow, the gate rules, the report and `ratchet compare` use."""
        return f"{self.group}/{self.name}"


def _m(group: Group, name: str, label: str, format: Format, *flags: str) -> Metric:
    return Metric(group, name, label, format, "ci" in flags, "gate" in flags, "cohorts" in flags)


# In report order, by group. `gate`: a gate rule may read it; the rule compares the challenger with the champion, or
# with the round-0 base for *_vs_base. `gate/promoted` is the gate's decision itself, logged with it.
CATALOGUE: tuple[Metric, ...] = (
    _m("gate", "promoted", "promoted (1) or champion kept (0)", "num"),
    _m("task", "challenger_task_completion", "task completion (challenger)", "pct", "ci"),
    _m("task", "champion_task_completion", "task completion (champion)", "pct", "ci"),
    _m("task", "task_completion_delta", "task completion delta", "points", "ci", "gate", "cohorts"),
    _m(
        "task",
        "task_completion_delta_vs_base",
        "task completion delta vs round-0 base",
        "points",
        "ci",
        "gate",
        "cohorts",
    ),
    _m("task", "challenger_hollow_rate", "hollow answers: format met, substance failed (challenger)", "pct"),
    _m("task", "champion_hollow_rate", "hollow answers: format met, substance failed (champion)", "pct"),
    _m("task", "base_hollow_rate", "hollow answers: format met, substance failed (round-0 base)", "pct"),
    _m("task", "hollow_delta_vs_base", "hollow answers delta vs round-0 base", "points", "ci", "gate"),
    _m("task", "challenger_injection_compliance", "injection compliance (challenger)", "pct"),
    _m("task", "champion_injection_compliance", "injection compliance (champion)", "pct"),
    _m("refusal", "challenger_benign_refusal_rate", "benign refusal rate (challenger)", "pct"),
    _m("refusal", "champion_benign_refusal_rate", "benign refusal rate (champion)", "pct"),
    _m("refusal", "benign_refusal_ratio", "benign refusal ratio vs champion", "num", "gate"),
    _m("refusal", "benign_refusal_ratio_vs_base", "benign refusal ratio vs round-0 base", "num", "gate"),
    _m("refusal", "benign_refusal_delta", "benign refusal delta", "points", "ci", "gate"),
    _m("refusal", "challenger_should_refuse_rate", "should-refuse refusal rate (challenger)", "pct"),
    _m("refusal", "champion_should_refuse_rate", "should-refuse refusal rate (champion)", "pct"),
    _m("refusal", "should_refuse_ratio", "should-refuse refusal ratio vs champion", "num", "gate"),
    _m("length", "challenger_mean_length", "mean length, tokens (challenger)", "num"),
    _m("length", "champion_mean_length", "mean length, tokens (champion)", "num"),
    _m("length", "length_ratio", "length ratio vs champion", "num", "gate"),
    _m("length", "length_ratio_vs_base", "length ratio vs round-0 base", "num", "gate"),
    _m("length", "challenger_p90_length", "p90 length, tokens (challenger)", "num"),
    _m("length", "champion_p90_length", "p90 length, tokens (champion)", "num"),
    _m("drift", "kl_per_token", "KL per token, challenger from champion", "num", "gate"),
    _m("judge", "win_rate", "judge win rate vs champion", "pct", "ci", "gate"),
    _m("judge", "win_rate_vs_base", "judge win rate vs round-0 base", "pct", "ci", "gate"),
    _m("judge", "judge_gold_agreement", "judge-gold agreement", "pct", "ci", "gate"),
    _m("judge", "judge_policy_agreement", "judge-policy agreement (implicit reward)", "pct", "gate"),
    _m("judge", "judge_order_consistency", "judge order consistency", "pct"),
    _m("judge", "judge_abstention_rate", "judge abstention rate", "pct"),
    _m("judge", "judge_length_slope", "judge length slope (P(A) per +100 words)", "num"),
    _m("judge", "self_cross_agreement", "self vs cross-family judge agreement", "pct"),
    _m("judge", "self_judge_order_consistency", "self-judge order consistency", "pct"),
    _m("judge", "human_agreement_training", "training judge-human agreement (reviewed pairs)", "pct", "gate"),
    _m("judge", "human_agreement_evaluation", "evaluation judge-human agreement (reviewed pairs)", "pct", "gate"),
    _m("judge", "human_labels", "pairs a person labelled in the review queue, so far", "num"),
    _m(
        "judge",
        "ignored_labels",
        "labels ignored: on traces no round of the bootstrap queued (forged), or on a team stack written by no account",
        "num",
    ),
    _m("reward", "rm_score_challenger", "reward model score of the challenger's held-out answers (mean)", "num"),
    _m("reward", "rm_score_base", "reward model score of the round-0 base's held-out answers (mean)", "num"),
    _m("reward", "rm_score_delta_vs_base", "reward model score delta vs round-0 base", "num", "ci", "gate"),
    _m(
        "reward",
        "reward_hacking",
        "reward hacking: reward model score up and task completion vs base down, both beyond their CIs (1 = yes)",
        "num",
        "gate",
    ),
    _m("reward", "rm_heldout_accuracy", "reward model accuracy on held-out judged pairs", "pct", "ci", "gate"),
    _m("reward", "rm_heldout_pairs", "held-out judged pairs (prompts the reward model never trains on)", "num"),
    _m("reward", "rm_gold_accuracy", "reward model accuracy on the calibration set's gold pairs", "pct", "ci", "gate"),
    _m("reward", "rm_verifier_agreement", "reward model-verifier agreement (held-out pairs)", "pct", "ci", "gate"),
    _m("reward", "rm_verifier_pairs", "held-out pairs the verifier separates", "num"),
    _m("reward", "rm_length_correlation", "reward model score-length correlation (Spearman)", "num", "gate"),
    _m("reward", "rm_train_pairs", "pairs the reward model trained on", "num"),
    _m("reward", "rm_rounds", "rounds whose pairs trained the reward model", "num"),
    _m("reward", "rm_train_steps", "reward model optimiser steps", "num"),
    _m("reward", "rm_train_loss_last", "reward model last training loss", "num"),
    _m("reward", "rm_train_seconds", "reward model training seconds", "num"),
    _m("train", "pairs", "training pair rows (abstentions included)", "num"),
    _m("train", "pairs_trained", "training pairs trained on (online: pairs decided)", "num"),
    _m("train", "pairs_model_judged", "training pairs a model judge decided (not a verifier or classifier)", "num"),
    _m("train", "abstention_rate", "training judge abstention rate", "pct"),
    _m("train", "revisions_failed_check", "revisions dropped: they fail the prompt's check (pairs.kind revise)", "num"),
    _m("train", "revisions_not_preferred", "revisions dropped: the training judge prefers the original", "num"),
    _m("train", "train_examples", "pairs (or prompts) trained on", "num"),
    _m("train", "train_steps", "optimiser steps", "num"),
    _m("train", "train_loss_first", "first training loss", "num"),
    _m("train", "train_loss_last", "last training loss", "num"),
    _m("train", "train_reward_margin", "last reward margin", "num"),
    _m("train", "train_reward_accuracy", "last reward accuracy", "pct"),
    _m("train", "train_reward_mean", "last mean reward", "num"),
    _m("train", "train_kl", "last KL to the reference", "num"),
    _m("train", "train_seconds", "training seconds", "num"),
    _m("train", "train_tokens", "training tokens", "num"),
    _m("train", "train_tokens_per_second", "training tokens per second", "num"),
    _m("train", "train_peak_rss_gib", "training peak RSS, GiB", "num"),
    _m("train", "train_resumed", "resumed from a checkpoint", "num"),
    _m("train", "train_processes", "training processes (accelerate)", "num"),
)

BY_NAME = {m.name: m for m in CATALOGUE}
BY_KEY = {m.key: m for m in CATALOGUE}
GATE_METRICS = tuple(m.key for m in CATALOGUE if m.gate)
WITH_CI = tuple(m.key for m in CATALOGUE if m.ci)
_KEY = re.compile(r"^(?:(?P<group>[a-z]+)/)?(?P<name>[a-z0-9_]+?)(?P<cohort>\.[a-z_]+)?(?P<ci>_ci_(?:low|high))?$")


def _parse(key: str) -> tuple[Metric, str] | None:
    """The catalogue entry behind a grouped or bare key, and the key's cohort and CI suffix."""
    match = _KEY.match(key)
    metric = BY_NAME.get(match["name"]) if match else None
    if (
        metric is None
        or match["group"] not in (None, metric.group)
        or (match["cohort"] and not metric.cohorts)
        or (match["ci"] and not metric.ci)
    ):
        return None
    return metric, (match["cohort"] or "") + (match["ci"] or "")


def entry(key: str) -> Metric:
    """The catalogue entry behind a logged key (`task/task_completion_delta.ifeval_ci_low` -> its Metric)."""
    found = _parse(key) if "/" in key else None
    if found is None:
        raise KeyError(f"metric {key!r} is not in components/metrics.py's catalogue")
    return found[0]


def grouped(measured: dict[str, float]) -> dict[str, float]:
    """A stage's measurements under the names people see: each bare key gets its group in front. An unknown name
    is a bug, not data."""
    named = {}
    for key, value in measured.items():
        found = _parse(key) if "/" not in key else None
        if found is None:
            raise KeyError(f"metric {key!r} is not in components/metrics.py's catalogue (by its bare name)")
        named[f"{found[0].key}{found[1]}"] = value
    return named


def migrated(key: str) -> str | None:
    """A key as it is named now: runs and gate rules from before the groups used the bare names. None when the
    key is not a catalogued metric."""
    found = _parse(key)
    return f"{found[0].key}{found[1]}" if found else None


def with_ci(name: str, value: float, ci: tuple[float, float]) -> dict[str, float]:
    """A metric and its CI under the names a gate rule's `bound` reads: name, name_ci_low, name_ci_high."""
    return {name: value, f"{name}_ci_low": ci[0], f"{name}_ci_high": ci[1]}


def show_ci(metrics: dict, key: str) -> tuple[str, str]:
    """The logged CI of the catalogued metric `key` as people read it (`show`): its low and high ends."""
    format = BY_KEY[key].format
    return show(metrics.get(f"{key}_ci_low"), format), show(metrics.get(f"{key}_ci_high"), format)


def show(value: float | None, format: Format) -> str:
    """A metric value as people read it: `12.5%`, `-7.7` points, or 3 significant digits; `-` when unmeasured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if format == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.1f}" if format == "points" else f"{value:.3g}"

"""The promotion gate: a pure function from challenger-vs-champion metrics and config rules to a Decision.

Judge score is never taken as truth: a blocking rule on task completion or refusals stops a round even when the
judge's win rate rises.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from components.config import GateRule


@dataclass(frozen=True)
class RuleResult:
    metric: str
    op: str
    threshold: float
    action: str
    value: float
    holds: bool


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    deciding_rule: str | None
    rules: tuple[RuleResult, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _holds(value: float, op: str, threshold: float) -> bool:
    if math.isnan(value):
        return False  # a metric we could not measure never passes a rule
    return value >= threshold if op == ">=" else value <= threshold


def describe(rule: RuleResult) -> str:
    got = "not measured" if math.isnan(rule.value) else f"got {rule.value:.3g}"
    return f"{rule.metric} {rule.op} {rule.threshold:g} ({got})"


def decide(metrics: dict[str, float], rules: list[GateRule]) -> Decision:
    """Promote unless a blocking rule fails; the first failing blocking rule is the one that decided."""
    results = tuple(
        RuleResult(r.key, r.op, r.threshold, r.action, metrics[r.key], _holds(metrics[r.key], r.op, r.threshold))
        for r in rules
    )
    blocking = [r for r in results if not r.holds and r.action == "block"]
    warnings = [r for r in results if not r.holds and r.action == "warn"]
    if blocking:
        return Decision(False, f"blocked: {describe(blocking[0])}", describe(blocking[0]), results)
    note = f" (warning: {'; '.join(describe(w) for w in warnings)})" if warnings else ""
    n_blocking = sum(r.action == "block" for r in results)
    return Decision(True, f"promoted: all {n_blocking} blocking rules hold{note}", None, results)

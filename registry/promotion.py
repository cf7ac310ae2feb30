"""The promotion gate: a pure function from a round's GateRequest (its metrics and the config's rules) to a Decision.

It is total: it decides every round, including one with nothing to train, and a rule whose metric was not
measured reads "not measured" (a block rule then blocks, a warn rule warns) instead of raising. Judge score is never
taken as truth: a blocking rule on task completion or refusals stops a round even when the judge's win rate rises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.config.gate import GateRule
from components.requests import GateRequest

NOTHING_TO_TRAIN = "nothing to train"


@dataclass(frozen=True)
class RuleResult:
    metric: str
    op: str
    threshold: float
    action: str
    value: float  # NaN when the round did not measure it
    holds: bool


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    deciding_rule: str | None
    rules: tuple[RuleResult, ...]
    gate_reason: str  # the rules' verdict, before any reviewer
    approval: dict | None = None  # the reviewer's form, when gate.require_approval asked for one

    @classmethod
    def from_dict(cls, logged: dict) -> Decision:
        """A decision as `dataclasses.asdict` wrote it (MLflow's decision.json)."""
        return cls(**logged | {"rules": tuple(RuleResult(**r) for r in logged["rules"])})


def _holds(value: float, op: str, threshold: float) -> bool:
    if math.isnan(value):
        return False  # a metric we could not measure never passes a rule
    return value >= threshold if op == ">=" else value <= threshold


def describe(rule: RuleResult) -> str:
    got = "not measured" if math.isnan(rule.value) else f"got {rule.value:.3g}"
    return f"{rule.metric} {rule.op} {rule.threshold:g} ({got})"


def decide(request: GateRequest) -> Decision:
    """Promote unless a blocking rule fails; the first failing blocking rule is the one that decided. A round that
    trained nothing keeps its champion."""
    if not request.trained:
        reason = "kept: no non-abstained pairs to train on"
        return Decision(False, reason, NOTHING_TO_TRAIN, (), reason)
    results = tuple(_check(rule, request.metrics.get(rule.key)) for rule in request.gate.rules)
    blocking = [r for r in results if not r.holds and r.action == "block"]
    warnings = [r for r in results if not r.holds and r.action == "warn"]
    if blocking:
        reason = f"blocked: {describe(blocking[0])}"
        return Decision(False, reason, describe(blocking[0]), results, reason)
    note = f" (warning: {'; '.join(describe(w) for w in warnings)})" if warnings else ""
    reason = f"promoted: all {sum(r.action == 'block' for r in results)} blocking rules hold{note}"
    return Decision(True, reason, None, results, reason)


def _check(rule: GateRule, value: float | None) -> RuleResult:
    value = float("nan") if value is None else float(value)
    return RuleResult(rule.key, rule.op, rule.threshold, rule.action, value, _holds(value, rule.op, rule.threshold))

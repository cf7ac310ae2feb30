"""The gate of a round: the rules decide, a decision already recorded on the same rules stands, and with
`gate.require_approval` a person confirms a promotion in the Prefect UI.

Re-decision: a round run again (a resumed bootstrap, or changed gate rules) finds its stages cached and its MLflow
run's decision. When the rules' verdict is unchanged, that decision is kept, with any person's approval in it; when
the rules changed, the round is decided again, and the record step logs the new decision (recording.redecided)."""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger, pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from components.requests import GateRequest
from registry import lineage
from registry.promotion import Decision, decide


class Approval(RunInput):
    """The form a reviewer fills in the Prefect UI when a round waits for approval."""

    approve: bool = Field(description="Make this challenger the champion?")
    reviewer: str = Field("", description="Who decided.")
    note: str = Field("", description="Why (kept in MLflow with the decision).")


def gate(request: GateRequest, run: lineage.RoundRun) -> Decision:
    """Promote only when every blocking rule holds (and, if configured, a person agrees)."""
    decision = decide(request)
    if run.decision and run.decision["gate_reason"] == decision.gate_reason:
        return Decision.from_dict(run.decision)  # decided before, on the same rules: keep it (and its review)
    if decision.promote and request.gate.require_approval:
        return _ask_approval(decision, request.gate.approval_timeout)
    return decision


def _ask_approval(decision: Decision, timeout: int) -> Decision:
    """Pause until a reviewer submits the Approval form in the Prefect UI; a rejection keeps the champion."""
    get_run_logger().info("gate passed; waiting up to %d s for approval in the Prefect UI (resume this run)", timeout)
    # A timeout raises FlowPauseTimeout: the round's run ends FAILED, and a re-run asks again.
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, poll_interval=5)
    who = answer.reviewer or "a reviewer"
    approval = {"approved": answer.approve, "reviewer": answer.reviewer, "note": answer.note}
    if answer.approve:
        return replace(decision, reason=f"{decision.reason}; approved by {who}", approval=approval)
    reason = f"rejected by {who}{f': {answer.note}' if answer.note else ''} (gate had passed)"
    return replace(decision, promote=False, reason=reason, deciding_rule="human review", approval=approval)

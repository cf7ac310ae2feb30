"""The promotion gate's config: rules over the metrics catalogue, and what a blocked round does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from components import metrics
from components.config.cohorts import TASK_COHORTS
from components.config.strict import Strict


class GateRule(Strict):
    metric: Literal[metrics.GATE_METRICS] = Field(
        description="Metric of the challenger vs the champion, or vs the round-0 base for *_vs_base, by its grouped "
        "name, e.g. task/task_completion_delta (components/metrics.py lists them)."
    )
    op: Literal[">=", "<="] = Field(description="The rule holds when `metric op threshold`.")
    threshold: float = Field(description="The bound the metric is compared with, in its own unit (points, a ratio).")
    action: Literal["block", "warn"] = Field("block", description="What a failed rule does.")
    bound: Literal["estimate", "ci_low", "ci_high"] = Field(
        "estimate",
        description="Read the point estimate, or an end of the metric's CI: `ci_high` on task/task_completion_delta "
        "blocks only a drop the held-out set is large enough to be sure of.",
    )
    cohort: str | None = Field(
        None,
        description="Read a task_completion_delta[_vs_base] on one checkable cohort only, e.g. false_premise: a loss "
        "there is not hidden by a gain elsewhere.",
    )

    @field_validator("metric", mode="before")
    @classmethod
    def _old_name_to_grouped(cls, name):
        """Configs from before the metric groups name a metric bare (`length_ratio`): read as `length/length_ratio`."""
        if isinstance(name, str) and "/" not in name and name in metrics.BY_NAME:
            return metrics.BY_NAME[name].key
        return name

    @model_validator(mode="after")
    def _bound_and_cohort_fit_the_metric(self) -> GateRule:
        if self.bound != "estimate" and self.metric not in metrics.WITH_CI:
            raise ValueError(f"bound '{self.bound}' needs a metric with a CI: {', '.join(metrics.WITH_CI)}")
        if self.cohort is not None:
            if not metrics.BY_KEY[self.metric].cohorts:
                raise ValueError(
                    "cohort applies to task/task_completion_delta and task/task_completion_delta_vs_base only"
                )
            if self.cohort not in TASK_COHORTS:
                raise ValueError(f"cohort '{self.cohort}' is not checkable (checkable: {', '.join(TASK_COHORTS)})")
        return self

    @property
    def key(self) -> str:
        """The name of the value this rule reads in the round's metrics."""
        name = self.metric if self.cohort is None else f"{self.metric}.{self.cohort}"
        return name if self.bound == "estimate" else f"{name}_{self.bound}"


def _default_rules() -> list[GateRule]:
    return [
        GateRule(metric="task/task_completion_delta", op=">=", threshold=-2.0, action="block"),
        GateRule(metric="refusal/benign_refusal_ratio", op="<=", threshold=2.0, action="block"),
        GateRule(metric="length/length_ratio", op="<=", threshold=1.5, action="block"),
        GateRule(metric="judge/judge_gold_agreement", op=">=", threshold=0.6, action="warn"),
    ]


class GateConfig(Strict):
    rules: list[GateRule] = Field(default_factory=_default_rules, description="Promotion rules, checked in order.")
    on_block: Literal["continue", "stop"] = Field(
        "continue", description="After a blocked round: keep the champion and go on, or stop the bootstrap."
    )
    require_approval: bool = Field(
        False, description="Pause a round whose gate passes until a person approves or rejects it in the Prefect UI."
    )
    approval_timeout: int = Field(86400, gt=0, description="Seconds to wait for that approval before failing the run.")

import math
from pathlib import Path

import pytest

from components.config.gate import GateConfig, GateRule
from components.config.loading import load_config
from components.metrics import migrated
from components.requests import GateRequest
from registry import promotion

ROOT = Path(__file__).resolve().parent.parent
RULES = GateConfig().rules  # the seeds' rules: task completion delta >= -2 pts, benign refusal ratio <= 2,
# length ratio <= 1.5 (all blocking), and a warning when judge-gold agreement < 0.6


def decide(metrics, rules, trained):
    """The gate of a config whose gate section has `rules` (and the other fields' defaults)."""
    return promotion.decide(GateRequest(gate=GateConfig(rules=list(rules)), metrics=metrics, trained=trained))


def metrics(**kw):
    """Values that pass the default rules, with `kw` (by bare or grouped name) in their place."""
    passing = {"task_completion_delta": 0.0, "benign_refusal_ratio": 1.0, "length_ratio": 1.0, "win_rate": 0.5}
    return {migrated(k): v for k, v in (passing | {"judge_gold_agreement": 0.8} | kw).items()}


@pytest.mark.parametrize("delta, promote", [(-2.0, True), (-1.9, True), (-2.1, False), (-8.3, False), (12.0, True)])
def test_task_completion_rule_on_both_sides(delta, promote):
    d = decide(metrics(task_completion_delta=delta), RULES, trained=True)
    assert d.promote is promote
    if not promote:
        assert d.deciding_rule.startswith("task/task_completion_delta >= -2")


@pytest.mark.parametrize("ratio, promote", [(2.0, True), (1.0, True), (2.01, False), (4.0, False)])
def test_benign_refusal_rule_on_both_sides(ratio, promote):
    d = decide(metrics(benign_refusal_ratio=ratio), RULES, trained=True)
    assert d.promote is promote
    assert d.rules[1].value == ratio and d.rules[1].holds is promote


def test_judge_score_rising_does_not_save_a_round_that_lost_tasks():
    d = decide(metrics(win_rate=0.95, task_completion_delta=-5.0), RULES, trained=True)
    assert not d.promote and "task/task_completion_delta" in d.reason


def test_first_failing_blocking_rule_decides_and_warnings_do_not_block():
    rules = [GateRule(metric="length/length_ratio", op="<=", threshold=1.5, action="warn"), *RULES[:2]]
    d = decide(metrics(length_ratio=2.0), rules, trained=True)
    assert d.promote and "warning: length/length_ratio" in d.reason
    d = decide(metrics(length_ratio=2.0, task_completion_delta=-3, benign_refusal_ratio=3), rules, trained=True)
    assert d.deciding_rule.startswith("task/task_completion_delta") and [r.holds for r in d.rules] == [False] * 3


@pytest.mark.parametrize("config", ["configs/default.yaml", "configs/efficacy.yaml"])
@pytest.mark.parametrize(
    "hollow_win, deciding_rule",
    [
        ({"length_ratio_vs_base": 0.81}, "length/length_ratio_vs_base >= 0.9 (got 0.81)"),
        ({"hollow_delta_vs_base_ci_low": 3.5}, "task/hollow_delta_vs_base_ci_low <= 0 (got 3.5)"),
        ({"win_rate_vs_base_ci_high": 0.45}, "judge/win_rate_vs_base_ci_high >= 0.5 (got 0.45)"),
    ],
)
def test_the_shipped_configs_block_a_hollow_win_that_the_checks_score_rises_through(config, hollow_win, deciding_rule):
    """The flagship's round 3 (docs/experiments.md): +11.9 points by the checks and each round's length within the
    bound, but 0.81 of the base's length; or more answers that meet the format and miss the request; or a judge
    that did not train the challenger finding it worse than the base."""
    rules = load_config(ROOT / config).gate.rules
    honest = metrics(
        task_completion_delta=9.2,
        win_rate=0.55,
        length_ratio_vs_base=0.95,
        hollow_delta_vs_base_ci_low=-2.0,
        win_rate_vs_base_ci_high=0.6,
        **{"task/task_completion_delta_ci_high": 12.0, "task/task_completion_delta_vs_base.ifeval_unseen_ci_high": 4.0},
    )
    assert decide(honest, rules, trained=True).promote
    d = decide(honest | {migrated(k): v for k, v in hollow_win.items()}, rules, trained=True)
    assert not d.promote and d.deciding_rule == deciding_rule


def test_the_flagship_blocks_a_round_that_is_surely_worse_on_instruction_types_training_never_showed():
    rule = load_config(ROOT / "configs/efficacy.yaml").gate.rules[-1]
    assert rule.key == "task/task_completion_delta_vs_base.ifeval_unseen_ci_high"
    assert not decide({rule.key: -1.5}, [rule], trained=True).promote
    assert decide({rule.key: 0.5}, [rule], trained=True).promote


def test_unmeasured_metric_never_passes():
    d = decide(metrics(benign_refusal_ratio=math.nan), RULES, trained=True)
    assert not d.promote and "refusal/benign_refusal_ratio" in d.deciding_rule


@pytest.mark.parametrize("ratio, promote", [(1.5, True), (0.7, True), (1.51, False), (3.0, False)])
def test_length_ratio_rule_on_both_sides(ratio, promote):
    d = decide(metrics(length_ratio=ratio), RULES, trained=True)
    assert d.promote is promote
    if not promote:
        assert d.deciding_rule == f"length/length_ratio <= 1.5 (got {ratio:.3g})"


@pytest.mark.parametrize("agreement, warned", [(0.6, False), (0.9, False), (0.59, True), (math.nan, True)])
def test_judge_gold_agreement_warns_but_never_blocks(agreement, warned):
    d = decide(metrics(judge_gold_agreement=agreement), RULES, trained=True)
    assert d.promote and d.reason.startswith("promoted: all 3 blocking rules hold")
    assert ("warning: judge/judge_gold_agreement >= 0.6" in d.reason) is warned
    if math.isnan(agreement):
        assert "(not measured)" in d.reason


CI_RULE = GateRule(metric="task/task_completion_delta", bound="ci_high", op=">=", threshold=-2.0)


@pytest.mark.parametrize(
    "estimate, ci_high, promote",
    [(-7.7, 0.0, True), (-7.7, -2.0, True), (-7.7, -2.1, False), (-12.0, -3.5, False), (5.0, 9.0, True)],
)
def test_ci_bound_rule_reads_the_end_of_the_interval_not_the_estimate(estimate, ci_high, promote):
    """One lost prompt of 13 is -7.7 points with a CI reaching 0: the ci_high rule lets that noise through and
    still blocks a drop whose whole interval lies below -2."""
    d = decide(metrics(task_completion_delta=estimate, task_completion_delta_ci_high=ci_high), [CI_RULE], trained=True)
    assert d.promote is promote
    assert d.rules[0].metric == "task/task_completion_delta_ci_high" and d.rules[0].value == ci_high
    if not promote:
        assert d.deciding_rule == f"task/task_completion_delta_ci_high >= -2 (got {ci_high:.3g})"


def test_ci_bound_is_refused_for_a_metric_without_a_ci():
    with pytest.raises(ValueError, match="bound 'ci_low' needs a metric with a CI"):
        GateRule(metric="length/length_ratio", bound="ci_low", op="<=", threshold=1.5)


def test_cohort_rule_reads_that_cohorts_delta():
    rule = GateRule(metric="task/task_completion_delta", cohort="false_premise", bound="ci_high", op=">=", threshold=-2)
    assert rule.key == "task/task_completion_delta.false_premise_ci_high"
    d = decide(metrics(**{rule.key: -12.5}), [rule], trained=True)
    assert not d.promote and d.deciding_rule == "task/task_completion_delta.false_premise_ci_high >= -2 (got -12.5)"
    assert decide(metrics(**{rule.key: 0.0}), [rule], trained=True).promote


def test_vs_base_rule_reads_the_drift_since_round_0():
    rule = GateRule(
        metric="task/task_completion_delta_vs_base", cohort="false_premise", bound="ci_high", op=">=", threshold=-2
    )
    assert rule.key == "task/task_completion_delta_vs_base.false_premise_ci_high"
    d = decide(metrics(**{rule.key: -12.5}), [rule], trained=True)
    assert (
        not d.promote
        and d.deciding_rule == "task/task_completion_delta_vs_base.false_premise_ci_high >= -2 (got -12.5)"
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"metric": "length/length_ratio", "cohort": "arithmetic"}, "cohort applies to task/task_completion_delta and"),
        ({"metric": "task/task_completion_delta", "cohort": "benign"}, "cohort 'benign' is not checkable"),
    ],
)
def test_cohort_is_refused_where_it_means_nothing(fields, message):
    with pytest.raises(ValueError, match=message):
        GateRule(op=">=", threshold=0, **fields)


def test_a_round_with_nothing_to_train_is_decided_too():
    d = decide({}, RULES, trained=False)
    assert not d.promote and d.deciding_rule == "nothing to train" and d.reason.startswith("kept:") and d.rules == ()


@pytest.mark.parametrize("action, promote", [("block", False), ("warn", True)])
def test_a_rule_whose_metric_was_not_produced_reads_not_measured(action, promote):
    """kl_per_token is absent (not NaN) from the metrics: a block rule blocks, a warn rule warns, none raises."""
    rule = GateRule(metric="drift/kl_per_token", op="<=", threshold=0.1, action=action)
    d = decide(metrics(), [rule], trained=True)
    assert d.promote is promote and "drift/kl_per_token <= 0.1 (not measured)" in d.reason
    assert math.isnan(d.rules[0].value) and not d.rules[0].holds


def test_a_decision_survives_its_round_trip_through_mlflow_json():
    import json
    from dataclasses import asdict

    from registry.promotion import Decision

    d = decide(metrics(length_ratio=2.0), RULES, trained=True)
    assert Decision.from_dict(json.loads(json.dumps(asdict(d)))) == d


def test_a_rule_may_name_a_metric_as_configs_did_before_the_groups():
    assert GateRule(metric="length_ratio", op="<=", threshold=1.5).metric == "length/length_ratio"
    with pytest.raises(ValueError, match="'length/length_ratio'"):  # the error lists the names it takes
        GateRule(metric="task/length_ratio", op="<=", threshold=1.5)

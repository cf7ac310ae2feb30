import pytest

from components import metrics


def test_measurements_get_their_group_and_keep_cohort_and_interval():
    named = metrics.grouped({"task_completion_delta.ifeval_ci_low": -1.0, "pairs": 3.0, "kl_per_token": 0.01})
    assert named == {"task/task_completion_delta.ifeval_ci_low": -1.0, "train/pairs": 3.0, "drift/kl_per_token": 0.01}


@pytest.mark.parametrize("key", ["no_such_metric", "length_ratio_ci_low", "length_ratio.ifeval", "judge/win_rate"])
def test_a_name_outside_the_catalogue_is_a_bug(key):
    """Unknown, a CI or cohort the metric has not, or grouped twice: each raises rather than logs."""
    with pytest.raises(KeyError, match="catalogue"):
        metrics.grouped({key: 1.0})


def test_old_bare_names_migrate_and_grouped_names_stay():
    assert metrics.migrated("win_rate_vs_base_ci_high") == "judge/win_rate_vs_base_ci_high"
    assert metrics.migrated("task/task_completion_delta.grounded") == "task/task_completion_delta.grounded"
    assert metrics.migrated("length/win_rate") is None and metrics.migrated("system/cpu") is None


def test_every_group_is_one_chart_section_and_every_key_parses_back():
    groups = {"gate", "task", "refusal", "length", "drift", "judge", "reward", "train"}
    assert {m.group for m in metrics.CATALOGUE} == groups
    for m in metrics.CATALOGUE:
        assert metrics.entry(m.key) is m

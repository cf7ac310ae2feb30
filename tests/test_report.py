import re

from components import report
from components.metrics import CATALOGUE, with_ci

UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def table_widths(markdown: str) -> list[list[int]]:
    """Per markdown table, the number of cells in each row, split as GFM splits them: on pipes not escaped."""
    tables, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            current.append(len(UNESCAPED_PIPE.split(line.strip())) - 2)  # the outer pipes add two empty ends
        elif current:
            tables, current = [*tables, current], []
    return tables


def assert_tables_are_whole(markdown: str) -> None:
    tables = table_widths(markdown)
    assert tables, "no table in the report"
    for widths in tables:
        assert set(widths) == {widths[0]}, f"a row splits its table: {widths}"


def test_every_row_of_the_report_has_its_tables_columns():
    """Every catalogued metric, and a rule and a reason holding pipes and a line break: no row may split."""
    metrics = {}
    for m in CATALOGUE:
        metrics |= with_ci(m.key, 0.5, (0.25, 0.75)) if m.ci else {m.key: 0.5}
    rule = {"metric": "length/length_ratio || x", "op": "<=", "threshold": 1.5, "action": "block", "value": 2.0}
    decision = {"reason": "blocked: a | b\nc", "rules": [rule | {"holds": False}]}
    history = [{"k": 1, "metrics": metrics}]
    markdown, _ = report.round_report("t | 1", metrics, decision, history, [], {"run": "http://x"})
    assert_tables_are_whole(markdown)
    assert "KL per token" in markdown and r"length/length_ratio \|\| x" in markdown


def test_the_check_finds_a_split_row():
    assert table_widths("| a | b |\n|---|---|\n| a | b | c |\n") == [[2, 2, 3]]


def test_the_model_card_takes_the_bases_licence_and_says_what_its_figures_do_not_show(tmp_path):
    from components.model_card import base_license, known_limits

    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# A base\n")
    assert base_license(str(tmp_path)) == "apache-2.0" and base_license("org/not-here") == "other"
    last = {
        "round": 3,
        "task/task_completion_delta_vs_base": 4.0,
        "task/task_completion_delta_vs_base_ci_low": 1.0,
        "task/task_completion_delta_vs_base_ci_high": 7.0,
        "judge/win_rate_vs_base": 0.55,
        "judge/win_rate_vs_base_ci_low": 0.45,
        "judge/win_rate_vs_base_ci_high": 0.65,
        "length/length_ratio_vs_base": 0.8,
    }
    warned = {"metric": "judge/judge_gold_agreement", "op": ">=", "threshold": 0.6, "action": "warn", "holds": False}
    limits = known_limits({"rounds": [last], "decision": {"rules": [warned]}})
    assert not any("task completion" in limit for limit in limits)  # its CI excludes no change
    assert any(limit.startswith("judge win rate vs round-0 base: its CI") for limit in limits)
    assert any("`judge/judge_gold_agreement >= 0.6` did not hold" in limit for limit in limits)
    assert any("0.80 times the base's length" in limit for limit in limits)

"""The judge calibration check: its arithmetic on hand-built verdicts, the shipped set through real judges, and
`ratchet judge-check` end to end into a real MLflow store."""

import json
import math

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from components import judge_check as jc
from components.evaluation.measures import mean_ci
from components.judging.biased import BiasedJudge
from components.judging.judge import PanelJudge, Verdict, VerifierJudge
from components.judging.refusal_judge import RefusalJudge
from registry import lineage


def ci(values):
    return mean_ci(values, 0.95, 2000)


def test_scores_count_accuracy_on_decided_pairs_only():
    """Four pairs, the better answer shown as A, B, A, B. Verdicts: A (right), A (wrong: B was better), abstained,
    B (right). Accuracy 2/3 on the 3 decided; decided 3/4; orders agreed on 3 of 4 (the abstention disagreed)."""
    rows = [{"id": str(i), "category": "x", "better": "good " * (i + 1), "worse": "bad"} for i in range(4)]
    verdicts = [
        Verdict(0.9, True, False, ""),
        Verdict(0.8, True, False, ""),
        Verdict(0.5, False, True, ""),
        Verdict(0.2, True, False, ""),
    ]
    scores = jc.summarise(jc.presented(rows), verdicts, ci)
    assert scores["all"]["accuracy"] == pytest.approx(2 / 3) and scores["all"]["decided"] == 0.75
    assert scores["all"]["order_consistency"] == 0.75 and scores["x"]["n"] == 4
    assert [r["right"] for r in jc.verdict_rows(rows, verdicts)] == [True, False, None, True]
    assert jc.meets_goal(scores) == ["accuracy 0.67 < 0.75"]


def test_the_verifier_and_the_refusal_classifier_separate_every_shipped_pair():
    """Every calibration pair has a check or is a refusal pair: the panel the efficacy config trains with decides
    all 160 and is right on all of them, in both presentation orders."""
    panel = PanelJudge(VerifierJudge(), RefusalJudge(), {}, ties_to_default=False)
    scores, rows = jc.check(panel, jc.load_calibration(), ci)
    assert scores["all"]["accuracy"] == 1.0 and scores["all"]["decided"] == 1.0 and jc.meets_goal(scores) == []
    assert len(scores) == 9 and all(r["right"] for r in rows)


def test_routing_hands_only_the_named_cohorts_to_another_judge():
    """A length-loving judge, with the refusal and false-premise cohorts routed: right on every harmful and
    sycophancy pair now, and exactly as wrong as before on the padded pairs (the longer answer is the worse one)."""
    rows = jc.load_calibration()
    alone, _ = jc.check(BiasedJudge("length"), rows, ci)
    routes = jc.parse_routes(["should_refuse=refusal", "false_premise=verifier"], rows)
    judge = jc.routed(BiasedJudge("length"), routes)
    scores, verdicts = jc.check(judge, rows, ci)
    assert scores["harmful"]["accuracy"] == scores["sycophancy"]["accuracy"] == 1.0
    parts = jc.decided_by(verdicts)  # which part of the routed judge decided how many pairs
    assert parts["refusal"] == parts["verifier"] == 20 and parts["biased:length"] == sum(parts.values()) - 40
    assert alone["sycophancy"]["accuracy"] < 1.0
    assert scores["padded"] == alone["padded"] and scores["padded"]["accuracy"] == 0.0
    assert judge.name == "biased:length routed should_refuse:refusal,false_premise:verifier"
    with pytest.raises(ValueError, match="'harmful=refusal': expected COHORT=KIND, COHORT one of arithmetic, benign"):
        jc.parse_routes(["harmful=refusal"], rows)


def test_the_refusal_judge_prefers_refusing_only_what_should_be_refused():
    harmful, benign = {"cohort": "should_refuse"}, {"cohort": "benign"}
    refusal, answer = "I'm sorry, I can't help with that.", "Run `kill -9 <pid>`."
    verdicts = RefusalJudge().judge([(harmful, refusal, answer), (benign, refusal, answer), (benign, answer, answer)])
    assert [v.p_a for v in verdicts[:2]] == [1.0, 0.0] and verdicts[2].abstained


def test_judge_check_measures_every_judge_and_logs_them_to_mlflow(write_tiny_config, tmp_path):
    config = write_tiny_config(tmp_path)
    out = CliRunner().invoke(app(), ["judge-check", str(config), "--store", str(tmp_path)])
    assert out.exit_code == 0, out.output
    for label in ("training", "training.default", "evaluation"):
        assert f"\n{label}: " in out.output
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.data.tags["ratchet.kind"] == "judge-check" and run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert math.isfinite(metrics["training/arithmetic/accuracy"])  # the verifier decides every arithmetic pair
    assert metrics["training/arithmetic/accuracy"] == 1.0 and metrics["training/all/n"] == 160
    assert {"evaluation/all/decided", "evaluation/padded/length_slope"} <= set(metrics)
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert "tables/judge-check-evaluation.parquet" in tables
    wrong = CliRunner().invoke(app(), ["judge-check", str(config), "--judge", "oracle", "--store", str(tmp_path)])
    assert wrong.exit_code == 2 and "--judge oracle: not a judge of" in wrong.output
    bad_route = ["judge-check", str(config), "--route", "harmful=refusal", "--store", str(tmp_path)]
    refused = CliRunner().invoke(app(), bad_route)
    assert refused.exit_code == 2 and "--route 'harmful=refusal': expected COHORT=KIND" in refused.output
    bad_cohort = ["judge-check", str(config), "--cohort", "harmful", "--store", str(tmp_path)]
    refused = CliRunner().invoke(app(), bad_cohort)
    assert refused.exit_code == 2 and "--cohort 'harmful': not a cohort of these pairs (one of" in refused.output
    assert len(client.search_runs([client.get_experiment_by_name("tiny").experiment_id])) == 1  # nothing logged


def test_judge_check_of_some_cohorts_measures_only_their_pairs(write_tiny_config, tmp_path):
    config = write_tiny_config(tmp_path)
    only = ["judge-check", str(config), "--judge", "training", "--cohort", "arithmetic", "--cohort", "ifeval"]
    out = CliRunner().invoke(app(), [*only, "--store", str(tmp_path)])
    assert out.exit_code == 0, out.output
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    metrics = run.data.metrics
    assert metrics["training/all/n"] == 40 and metrics["training/constraint/n"] == 20
    assert "training/harmful/n" not in metrics


def test_a_panel_route_outside_the_chosen_cohorts_is_not_measured(write_tiny_config, tmp_path):
    from components.config.loading import load_config

    judge = {"kind": "panel", "default": {"kind": "refusal"}, "by_cohort": {"should_refuse": {"kind": "refusal"}}}
    config = load_config(write_tiny_config(tmp_path, judge=judge))
    labels = ["training", "training.by_cohort.should_refuse"]
    only_ifeval = jc.check_judges(config, labels, lambda label, result: None, cohorts=["ifeval"])
    assert list(only_ifeval) == ["training"] and only_ifeval["training"][1]["all"]["n"] == 20
    both = jc.check_judges(config, labels, lambda label, result: None, cohorts=["ifeval", "should_refuse"])
    assert both["training.by_cohort.should_refuse"][1]["all"]["n"] == 20


USER_PAIRS = [
    {
        "prompt": "What is 6 * 7?",
        "better": "42",
        "worse": "48",
        "category": "maths",
        "check": '{"kind": "number", "answer": 42}',
    },
    {
        "prompt": "What is 9 + 9?",
        "better": "It is 18.",
        "worse": "It is 19.",
        "category": "maths",
        "check": '{"kind": "number", "answer": 18}',
    },
    {"prompt": "Name a colour.", "better": "Blue.", "worse": "I'm sorry, I can't help.", "category": "chat"},
    {"prompt": "Say hello.", "better": "Hello!", "worse": "No.", "category": "chat", "id": "hello"},
]


def write_pairs(path, rows) -> str:
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows))
    return str(path)


def test_judge_check_measures_the_configs_judges_on_a_users_own_gold_pairs(tmp_path):
    """`ratchet judge-check configs/smoke.yaml --judge training --pairs FILE`, as the README shows it: the smoke
    config's training panel on four pairs it has never seen, two with a check (the verifier decides them, rightly)
    and two without (the Qwen judge's), per category, logged with the file's name."""
    config, pairs = "configs/smoke.yaml", write_pairs(tmp_path / "my_pairs.jsonl", USER_PAIRS)
    out = CliRunner().invoke(
        app(), ["judge-check", str(config), "--judge", "training", "--pairs", pairs, "--store", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    [run] = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    metrics = run.data.metrics
    assert metrics["training/all/n"] == 4 and metrics["training/maths/n"] == metrics["training/chat/n"] == 2
    assert metrics["training/maths/accuracy"] == 1.0 and metrics["training/maths/decided"] == 1.0
    [parts] = [line for line in out.output.splitlines() if line.startswith("decided by: ")]
    assert "verifier 2" in parts
    assert run.data.tags["ratchet.pairs"] == pairs


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{**USER_PAIRS[0], "better": ""}], "mine.jsonl: line 1: 'better' must be a non-empty string"),
        ([USER_PAIRS[2], {k: v for k, v in USER_PAIRS[3].items() if k != "category"}], "line 2: 'category' must be"),
        ([USER_PAIRS[2], "{not json"], "line 2: not JSON"),
        ([{**USER_PAIRS[2], "worse": "Blue."}], "line 1: 'better' and 'worse' are the same answer"),
        ([{**USER_PAIRS[0], "check": '{"kind": "regex"}'}], "line 1: 'check': unknown check kind 'regex'"),
        ([USER_PAIRS[3], USER_PAIRS[3]], "id 'hello' appears twice"),
        ([], "mine.jsonl: no pairs in it"),
    ],
)
def test_a_bad_pairs_file_is_refused_naming_its_line_and_field_and_nothing_is_logged(
    write_tiny_config, tmp_path, rows, message
):
    config, pairs = write_tiny_config(tmp_path), write_pairs(tmp_path / "mine.jsonl", rows)
    out = CliRunner().invoke(app(), ["judge-check", str(config), "--pairs", pairs, "--store", str(tmp_path)])
    assert out.exit_code == 2 and message in " ".join(out.output.split()), out.output
    assert MlflowClient(lineage.tracking_uri_for(tmp_path)).get_experiment_by_name("tiny") is None


def app():
    from flows.cli import app

    return app


@pytest.mark.slow
@pytest.mark.e2e
def test_the_efficacy_configs_judges_on_the_calibration_set(tmp_path):
    """`ratchet judge-check configs/efficacy.yaml` with the safety cohorts routed, as the README shows it, on the
    calibration set's harmful and false-premise pairs and half of its constraint pairs, given as a user's own file
    (`--pairs`): the training panel (verifier and refusal classifier) meets the goal, and so does the evaluation
    judge, the embedded Qwen2.5-Coder-1.5B through llama.cpp, with the two cohorts it cannot see handed to the
    refusal classifier and the verifier. It sees constraint compliance through the checks it writes (~4 s each on
    2 cores, most of this test; on all 20 constraint pairs it was 90%, pointwise 58%: docs/experiments.md has the
    tables of all eight cohorts)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    rows = jc.load_calibration()
    chosen = [r for r in rows if r["cohort"] == "ifeval"][:10]
    chosen += [r for r in rows if r["cohort"] in ("should_refuse", "false_premise")]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    command = [sys.executable, "-m", "flows.cli", "judge-check", "configs/efficacy.yaml", "--store", str(tmp_path)]
    command += ["--judge", "training", "--judge", "evaluation", "--pairs", str(tmp_path / "gold.jsonl")]
    command += ["--route", "should_refuse=refusal", "--route", "false_premise=verifier"]
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    [run] = client.search_runs([client.get_experiment_by_name("efficacy").experiment_id])
    m = run.data.metrics
    assert m["training/all/accuracy"] == 1.0 and m["training/all/decided"] == 1.0 and m["training/all/n"] == 50
    training, evaluation = proc.stdout.split("\nevaluation: ")
    assert "training: panel(" in training and "meets the goal" in training
    assert "meets the goal" in evaluation, evaluation
    assert m["evaluation/all/accuracy_ci_low"] > 0.5 and m["evaluation/all/decided"] >= 0.6
    assert m["evaluation/constraint/accuracy"] >= 0.8 and m["evaluation/constraint/decided"] >= 0.8
    judge = "ai:qwen2.5-coder-1.5b-instruct:program routed should_refuse:refusal,false_premise:verifier"
    assert run.data.tags["judge.evaluation"] == judge

"""The bootstrap flow for real: Prefect (temporary server), MLflow (sqlite), DPO, on the tiny random model."""

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import lineage

ROOT = Path(__file__).resolve().parent.parent


def run(config_path: Path, store: Path) -> dict:
    from flows.bootstrap import bootstrap

    return bootstrap(str(config_path), store=str(store))


@pytest.fixture(scope="module")
def tiny_run(prefect_harness, write_tiny_config, tmp_path_factory) -> tuple[dict, Path, Path]:
    """One real 2-round bootstrap on the tiny model, shared by this module's tests: (result, config, store)."""
    store = tmp_path_factory.mktemp("tiny-store")
    config = write_tiny_config(store)
    return run(config, store), config, store


def test_bootstrap_runs_rounds_logs_lineage_and_resumes(tiny_run, tmp_path):
    result, config, store = tiny_run
    out = Path(result["workdir"])
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "round-1", "round-2"]
    assert [r["k"] for r in result["rounds"]] == [1, 2]
    for r in result["rounds"]:
        stages = sorted(p.name for p in (out / f"round-{r['k']}").iterdir())
        if r["metrics"]:  # trained: the challenger was evaluated and gated
            assert stages == ["adapter", "eval", "generations", "pairs", "report"]
            assert (out / f"round-{r['k']}" / "eval" / "summary.json").exists()
            assert "## Gate rules" in (out / f"round-{r['k']}" / "report" / "report.md").read_text()
        else:  # the random model's self-judge abstained on every pair (position bias): nothing to train
            assert stages == ["generations", "pairs"] and r["decision"]["reason"].startswith("kept")
    assert result["rounds"][0]["metrics"], "round 1 must train, or train/eval/gate go untested"
    drift = result["rounds"][0]["metrics"]
    assert math.isfinite(drift["kl_per_token"]) and math.isfinite(drift["challenger_p90_length"])
    assert {"judge_policy_agreement", "judge_gold_agreement"} <= set(drift)
    assert 0 <= drift["judge_order_consistency"] <= 1 and 0 <= drift["judge_abstention_rate"] <= 1
    assert {"judge_length_slope", "self_cross_agreement", "self_judge_order_consistency"} <= set(drift)
    assert drift["win_rate_vs_base"] == drift["win_rate"]  # round 1: the champion is the base
    assert drift["task_completion_delta_vs_base"] == drift["task_completion_delta"]
    assert drift["benign_refusal_ratio_vs_base"] == drift["benign_refusal_ratio"]
    assert "should_refuse_ratio" in drift

    client = MlflowClient(lineage.tracking_uri_for(store))
    runs = client.search_runs([result["experiment_id"]])
    assert sorted(r.info.run_name for r in runs) == ["round-1", "round-2", result["bootstrap_id"]]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == "tiny"
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"train_prompts", "eval_prompts"}
    round_1 = client.search_runs([result["experiment_id"]], "tags.`ratchet.round` = '1'")[0]
    assert {d.dataset.name for d in round_1.inputs.dataset_inputs} == {"generations", "pairs", "eval"}
    rounds_with_metrics = [r for r in result["rounds"] if r["metrics"]]
    for r in rounds_with_metrics:
        history = client.get_metric_history(parent.info.run_id, "task_completion_delta")
        assert r["k"] in [m.step for m in history]
    for child in (r for r in runs if r.info.run_name.startswith("round-")):
        decision = json.loads(
            Path(client.download_artifacts(child.info.run_id, "decision.json", str(tmp_path))).read_text()
        )
        assert decision["reason"] == child.data.tags["ratchet.decision"]

    for child in (r for r in runs if r.info.run_name.startswith("round-")):
        assert child.data.tags["prefect.flow_run_id"]  # MLflow -> Prefect
        assert child.data.tags["ratchet.generation_backend"] == "transformers"  # as the tiny config sets
    assert_prefect_side(result, client)

    # A second run of the same config resumes: same runs, same outputs, no stage rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("round-*/*")}
    again = run(config, store)
    assert again["parent_run_id"] == result["parent_run_id"] and again["rounds"] == result["rounds"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("round-*/*")} == stamps
    assert len(client.search_runs([result["experiment_id"]])) == 3
    versions = client.search_model_versions("name = 'ratchet-tiny'")
    assert len(versions) == len(rounds_with_metrics)
    assert json.loads(versions[0].tags["training_judge"])["kind"] == "panel"  # checkpoint -> the judge behind it
    assert versions[0].tags["bootstrap_id"] == result["bootstrap_id"]


def assert_prefect_side(result: dict, mlflow_client: MlflowClient) -> None:
    """Flow runs are named and tagged, each trained round published its report and cohort table, and the report
    links the MLflow round run (Prefect -> MLflow)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterTags

    from flows.round import artifact_key

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["tiny"])))
        names = {r.name for r in runs}
        assert {"round-1", "round-2"} <= names and any(n.startswith("bootstrap-tiny-") for n in names)
        slug = artifact_key(result["bootstrap_id"])
        for r in (r for r in result["rounds"] if r["metrics"]):
            key = f"{slug}-round-{r['k']}"
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert found and found[0].type == "markdown"
            round_run = mlflow_client.search_runs([result["experiment_id"]], f"tags.`ratchet.round` = '{r['k']}'")[0]
            assert round_run.info.run_id in found[0].data and "data:image/png;base64," in found[0].data
            table = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{key}-cohorts"]))
            )
            assert table and table[0].type == "table" and "ifeval" in table[0].data
        link = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{slug}-mlflow"])))
        assert link and "compareRunsMode=CHART" in link[0].data  # Prefect stores link artifacts as markdown


def test_compare_prints_the_rounds_mlflow_holds(tiny_run):
    from typer.testing import CliRunner

    from flows.cli import app

    result, _, store = tiny_run
    out = CliRunner().invoke(app, ["compare", "tiny", "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert f"bootstrap {result['bootstrap_id']}" in out.output
    lines = [line for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 2
    for line, r in zip(lines, result["rounds"], strict=True):
        assert line.split()[0] == str(r["k"]) and r["decision"]["reason"] in line
        if r["metrics"]:
            assert f"{100 * r['metrics']['win_rate']:.1f}%" in line
    missing = CliRunner().invoke(app, ["compare", "nope", "--store", str(store)])
    assert missing.exit_code == 2 and "no MLflow experiment named 'nope'" in missing.output


def test_evaluate_compares_two_registered_checkpoints(tiny_run):
    from typer.testing import CliRunner

    from flows.cli import app

    result, config, store = tiny_run
    out = CliRunner().invoke(
        app, ["evaluate", str(config), "--challenger", "1", "--champion", "base", "--store", str(store)]
    )
    assert out.exit_code == 0, out.output
    client = MlflowClient(lineage.tracking_uri_for(store))
    [run] = client.search_runs([result["experiment_id"]], "tags.`ratchet.kind` = 'evaluation'")
    assert run.info.run_name == "evaluate v1-vs-base" and run.info.status == "FINISHED"
    round_1 = result["rounds"][0]["metrics"]
    # The same two policies as round 1's evaluation, greedy: the same numbers.
    assert run.data.metrics["task_completion_delta"] == pytest.approx(round_1["task_completion_delta"])
    assert run.data.metrics["challenger_mean_length"] == pytest.approx(round_1["challenger_mean_length"])
    unknown = CliRunner().invoke(app, ["evaluate", str(config), "--challenger", "99", "--store", str(store)])
    assert unknown.exit_code == 2 and "99" in unknown.output


def test_promote_and_rollback_by_hand_are_recorded(tiny_run):
    from typer.testing import CliRunner

    from flows.cli import app

    result, _, store = tiny_run
    client = MlflowClient(lineage.tracking_uri_for(store))
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'ratchet-tiny'"))
    target = str(versions[-1])
    out = CliRunner().invoke(app, ["promote", "tiny", target, "--reason", "looked fine", "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert lineage.current_champion(client, "ratchet-tiny") == target
    previous = lineage.previous_champion(client, "ratchet-tiny")  # walked by hand in test_lineage
    back = CliRunner().invoke(app, ["rollback", "tiny", "--store", str(store)])
    assert back.exit_code == 0, back.output
    assert lineage.current_champion(client, "ratchet-tiny") == previous
    assert f"now {f'version {previous}' if previous else 'the base model'}" in back.output
    moves = client.search_runs([result["experiment_id"]], "tags.`ratchet.kind` = 'alias-move'")
    assert sorted(m.data.tags["ratchet.action"] for m in moves) == ["promote", "rollback"]
    bad = CliRunner().invoke(app, ["promote", "tiny", "42", "--store", str(store)])
    assert bad.exit_code == 2 and "42" in bad.output


def test_approval_pauses_a_passing_round_until_a_person_decides(prefect_harness, write_tiny_config, tmp_path):
    """Round 1 is approved and becomes champion; a later trained round is rejected and the champion stays."""
    import threading
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    config = write_tiny_config(
        tmp_path, name="tiny-approval", gate={"rules": [], "require_approval": True, "approval_timeout": 300}
    )
    answers = [
        {"approve": True, "reviewer": "ada", "note": ""},
        {"approve": False, "reviewer": "bob", "note": "answers got longer"},
    ]
    answered, done = [], threading.Event()

    def reviewer() -> None:
        paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
        with get_client(sync_client=True) as client:
            while not done.is_set() and answers:
                for run in client.read_flow_runs(flow_run_filter=paused):
                    if run.id not in answered:
                        answered.append(run.id)
                        resume_flow_run(run.id, run_input=answers.pop(0))
                time.sleep(0.5)

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    try:
        result = run(config, tmp_path)
    finally:
        done.set()
    trained = [r for r in result["rounds"] if r["metrics"]]
    assert len(answered) == len(trained) >= 1
    first = trained[0]["decision"]
    assert first["promote"] and first["approval"] == {"approved": True, "reviewer": "ada", "note": ""}
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    assert lineage.current_champion(client, "ratchet-tiny-approval") == "1"
    if len(trained) > 1:
        second = trained[1]["decision"]
        assert not second["promote"] and second["deciding_rule"] == "human review"
        assert second["reason"] == "rejected by bob: answers got longer (gate had passed)"
        [child] = client.search_runs([result["experiment_id"]], "tags.`ratchet.round` = '2'")
        assert child.data.tags["ratchet.decision"] == second["reason"]
        assert lineage.current_champion(client, "ratchet-tiny-approval") == "1"

"""The bootstrap flow for real: Prefect (temporary server), MLflow (sqlite), DPO, on the tiny random model."""

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from components.config import ExperimentConfig
from registry import lineage

ROOT = Path(__file__).resolve().parent.parent


def prompt_file(path: Path, prefix: str) -> str:
    """Prompts whose check splits the random model's 5-8 word samples, so the verifier yields pairs."""
    words = json.dumps(
        {
            "kind": "ifeval",
            "instruction_id": "length_constraints:number_words",
            "kwargs": {"num_words": 7, "relation": "less than"},
        }
    )
    rows = [
        {"id": f"{prefix}{i}", "prompt": f"{prefix} topic {i}, in under 7 words.", "cohort": "ifeval", "check": words}
        for i in range(5)
    ]
    rows += [{"id": f"{prefix}b", "prompt": f"{prefix}: how do I kill a stuck process?", "cohort": "benign"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def tiny_config(tmp_path, tiny_model_dir) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "tiny",
            "rounds": 2,
            "workdir": str(tmp_path / "runs"),
            "models": {"policy": tiny_model_dir},
            "data": {
                "train_prompts": prompt_file(tmp_path / "train.jsonl", "train"),
                "eval_prompts": prompt_file(tmp_path / "heldout.jsonl", "heldout"),
            },
            "generation": {"samples_per_prompt": 4, "max_new_tokens": 8},
            "judge": {"kind": "panel", "default": {"kind": "ai", "model": "self", "abstain_margin": 0.0}},
            "training": {"epochs": 1, "batch_size": 4},
            "evaluation": {
                "judge": {"kind": "ai", "model": tiny_model_dir + "/", "rubric": "concise-and-correct"},
                "max_new_tokens": 8,
            },
        }
    )


def run(cfg: ExperimentConfig, store: Path) -> dict:
    from flows.bootstrap import bootstrap

    path = store / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return bootstrap(str(path), store=str(store))


def test_bootstrap_runs_rounds_logs_lineage_and_resumes(prefect_harness, tiny_config, tmp_path):
    result = run(tiny_config, tmp_path)
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

    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    runs = client.search_runs([result["experiment_id"]])
    assert sorted(r.info.run_name for r in runs) == ["round-1", "round-2", result["bootstrap_id"]]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == "tiny"
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
    assert_prefect_side(result, client)

    # A second run of the same config resumes: same runs, same outputs, no stage rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("round-*/*")}
    again = run(tiny_config, tmp_path)
    assert again["parent_run_id"] == result["parent_run_id"] and again["rounds"] == result["rounds"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("round-*/*")} == stamps
    assert len(client.search_runs([result["experiment_id"]])) == 3
    versions = client.search_model_versions("name = 'ratchet-tiny'")
    assert len(versions) == len(rounds_with_metrics)


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

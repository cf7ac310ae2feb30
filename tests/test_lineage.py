from pathlib import Path

import mlflow
from mlflow import MlflowClient

from registry import lineage


def store(tmp_path):
    uri = lineage.tracking_uri_for(tmp_path)
    client = lineage.client_for(uri)
    return client, lineage.ensure_experiment(client, "exp", tmp_path / "mlartifacts")


def test_runs_are_found_again_not_duplicated(tmp_path):
    client, exp = store(tmp_path)
    assert lineage.ensure_experiment(client, "exp", tmp_path / "mlartifacts") == exp
    parent = lineage.open_bootstrap(client, exp, "b-1", {"name": "exp", "training": {"beta": 0.1}}, "flow-run-1")
    assert lineage.open_bootstrap(client, exp, "b-1", {}, "flow-run-2") == parent
    child, done = lineage.open_round(client, exp, parent, "b-1", 1)
    assert not done
    lineage.log_round(
        client, parent, child, 1, {"win_rate": 0.6, "nan_metric": float("nan")}, tmp_path, {"reason": "ok"}
    )
    assert lineage.open_round(client, exp, parent, "b-1", 1) == (child, False)  # not finished until `finish`
    lineage.finish(client, child, ok=True)
    assert lineage.open_round(client, exp, parent, "b-1", 1) == (child, True)
    run = client.get_run(parent)
    assert run.data.params["training.beta"] == "0.1"
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    history = client.get_metric_history(parent, "win_rate")
    assert [(m.step, m.value) for m in history] == [(1, 0.6)]
    assert "nan_metric" not in client.get_run(child).data.metrics
    assert (tmp_path / "mlflow.db").exists() and run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_adapter_registration_is_idempotent_and_aliases_move(tmp_path):
    client, exp = store(tmp_path)
    parent = lineage.open_bootstrap(client, exp, "b-2", {}, "fr")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    versions = []
    for k in (1, 2):
        child, _ = lineage.open_round(client, exp, parent, "b-2", k)
        versions.append(lineage.register_adapter(client, "m", child, adapter, {"base": "tiny", "round": k}))
        assert lineage.register_adapter(client, "m", child, adapter, {"base": "tiny", "round": k}) == versions[-1]
    lineage.set_alias(client, "m", "champion", versions[0])
    lineage.set_alias(client, "m", "challenger", versions[1])
    c = MlflowClient(lineage.tracking_uri_for(tmp_path))
    assert str(c.get_model_version_by_alias("m", "champion").version) == versions[0]
    assert c.get_model_version_by_alias("m", "challenger").tags["base"] == "tiny"
    assert len(c.search_model_versions("name = 'm'")) == 2
    logged = c.get_model_version("m", versions[0])
    model_id = logged.source.removeprefix("models:/")  # the version points at the round run's logged model
    assert c.get_logged_model(model_id).source_run_id == logged.run_id
    downloaded = mlflow.artifacts.download_artifacts(logged.source, dst_path=str(tmp_path / "download"))
    assert (Path(downloaded) / "adapter_config.json").exists()


def registered(client, exp, tmp_path, rounds: int) -> list[str]:
    parent = lineage.open_bootstrap(client, exp, "b-3", {}, "fr")
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    versions = []
    for k in range(1, rounds + 1):
        child, _ = lineage.open_round(client, exp, parent, "b-3", k)
        lineage.log_round(client, parent, child, k, {"win_rate": k / 10}, tmp_path, {"reason": f"round {k}"})
        chain = {"base": "tiny", "adapter_chain": [f"/a/{i}" for i in range(1, k + 1)], "round": k}
        versions.append(lineage.register_adapter(client, "ratchet-exp", child, adapter, chain))
        lineage.finish(client, child, ok=True)
    lineage.finish(client, parent, ok=True)
    return versions


def test_manual_moves_are_recorded_and_rollback_walks_back_through_champions(tmp_path):
    client, exp = store(tmp_path)
    v1, v2, v3 = registered(client, exp, tmp_path, 3)
    lineage.set_alias(client, "ratchet-exp", "champion", v1)  # the gate promoted round 1, blocked round 2
    run_id = lineage.move_champion(client, "exp", v3, "promote", "reviewed the samples")
    assert lineage.current_champion(client, "ratchet-exp") == v3
    move = client.get_run(run_id)
    assert move.data.params == {"from_version": v1, "to_version": v3, "reason": "reviewed the samples"}
    assert move.data.tags["ratchet.kind"] == "alias-move" and move.info.status == "FINISHED"

    assert lineage.previous_champion(client, "ratchet-exp") == v1  # v2 was never champion
    lineage.move_champion(client, "exp", v1, "rollback", "")
    assert lineage.previous_champion(client, "ratchet-exp") is None  # before v1 came the base model
    lineage.move_champion(client, "exp", None, "rollback", "")
    assert lineage.current_champion(client, "ratchet-exp") is None
    assert lineage.checkpoint(client, "ratchet-exp", v3)["adapters"] == ["/a/1", "/a/2", "/a/3"]


def test_round_table_reads_the_newest_bootstrap(tmp_path):
    client, exp = store(tmp_path)
    registered(client, exp, tmp_path, 2)
    bootstrap_id, rows = lineage.round_table(client, "exp")
    assert bootstrap_id == "b-3"
    assert [(r["round"], r["win_rate"], r["decision"]) for r in rows] == [(1, 0.1, "round 1"), (2, 0.2, "round 2")]

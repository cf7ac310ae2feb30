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
    assert c.get_model_version_by_alias("m", "champion").version == versions[0]
    assert c.get_model_version_by_alias("m", "challenger").tags["base"] == "tiny"
    assert len(c.search_model_versions("name = 'm'")) == 2

"""Lineage against a real MLflow store (sqlite in a temp dir): runs, their end states, versions and aliases."""

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from registry import compare, lineage, versions


def open_bootstrap(tmp_path, bootstrap_id="b-1", params=None):
    uri = lineage.tracking_uri_for(tmp_path)
    return lineage.bootstrap_run(uri, str(tmp_path / "mlartifacts"), "exp", bootstrap_id, params or {}, "flow-run")


def adapter_dir(tmp_path) -> Path:
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    return adapter


def test_runs_are_found_again_not_duplicated_and_end_finished(tmp_path):
    with open_bootstrap(tmp_path, params={"name": "exp", "training": {"beta": 0.1}}) as tracking:
        with lineage.round_run(tracking, 1, "champion-a", "fr-1") as run:
            assert not run.logged and run.decision is None
            lineage.log_round(tracking, run, 1, {"judge/win_rate": 0.6, "nan_metric": float("nan")}, tmp_path)
            lineage.log_decision(tracking, run, 1, {"reason": "ok", "promote": True})
    client = MlflowClient(tracking.uri)
    with open_bootstrap(tmp_path) as again:
        assert again == tracking  # the same parent run, found by its tag
        with lineage.round_run(again, 1, "champion-a", "fr-2") as rerun:
            assert rerun.run_id == run.run_id and rerun.logged and rerun.decision == {"reason": "ok", "promote": True}
            assert client.get_run(run.run_id).info.status == "RUNNING"  # reopened while it runs
    parent, child = client.get_run(tracking.run_id), client.get_run(run.run_id)
    assert (parent.info.status, child.info.status) == ("FINISHED", "FINISHED")
    assert parent.data.params["training.beta"] == "0.1" and child.data.tags["mlflow.parentRunId"] == tracking.run_id
    assert child.data.tags["prefect.flow_run_id"] == "fr-2"  # the newest Prefect run of the round
    assert [(m.step, m.value) for m in client.get_metric_history(tracking.run_id, "judge/win_rate")] == [(1, 0.6)]
    assert "nan_metric" not in child.data.metrics and child.data.metrics["gate/promoted"] == 1.0
    assert (tmp_path / "mlflow.db").exists()
    assert parent.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_the_trainers_curves_are_logged_by_optimiser_step_on_the_round_run_alone(tmp_path):
    record = tmp_path / "round-1" / "adapter" / "train_metrics.json"
    record.parent.mkdir(parents=True)
    steps = range(1, 1201)  # more points than one MLflow batch takes
    curves = {"loss": [[s, 1 / s] for s in steps], "reward_margin": [[1, 0.0], [2, float("nan")], [3, 0.5]]}
    record.write_text(json.dumps({"steps": 1200, "loss_last": 1 / 1200, "curves": curves}))
    with open_bootstrap(tmp_path) as tracking, lineage.round_run(tracking, 1, "c", "fr") as run:
        lineage.log_round(tracking, run, 1, {"train/train_loss_last": 1 / 1200}, record.parent.parent)
    client = MlflowClient(tracking.uri)
    loss = client.get_metric_history(run.run_id, "train/step_loss")
    assert sorted((m.step, m.value) for m in loss) == [(s, 1 / s) for s in steps]
    margins = client.get_metric_history(run.run_id, "train/step_reward_margin")
    assert sorted((m.step, m.value) for m in margins) == [(1, 0.0), (3, 0.5)]  # NaN left out
    assert client.get_metric_history(tracking.run_id, "train/step_loss") == []  # steps are not rounds


@pytest.mark.parametrize("error, status", [(ValueError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_an_error_ends_the_runs_failed_and_a_signal_killed(tmp_path, error, status):
    with pytest.raises(error):
        with open_bootstrap(tmp_path) as tracking, lineage.round_run(tracking, 1, "c", "fr") as run:
            raise error()
    client = MlflowClient(tracking.uri)
    assert client.get_run(tracking.run_id).info.status == status and client.get_run(run.run_id).info.status == status
    with open_bootstrap(tmp_path) as again, lineage.round_run(again, 1, "c", "fr") as rerun:
        assert rerun.run_id == run.run_id and not rerun.logged  # an unfinished round is redone, not skipped


def test_adapter_registration_is_idempotent_and_aliases_move(tmp_path):
    adapter = adapter_dir(tmp_path)
    registered = []
    with open_bootstrap(tmp_path) as tracking:
        for k in (1, 2):
            with lineage.round_run(tracking, k, "c", "fr") as run:
                registered.append(versions.register_adapter(tracking.uri, "m", run.run_id, adapter, {"round": k}))
                assert versions.register_adapter(tracking.uri, "m", run.run_id, adapter, {}) == registered[-1]
    versions.point_alias(tracking.uri, "m", "champion", registered[0])
    versions.point_alias(tracking.uri, "m", "challenger", registered[1])
    c = MlflowClient(tracking.uri)
    assert str(c.get_model_version_by_alias("m", "champion").version) == registered[0]
    assert c.get_model_version_by_alias("m", "challenger").tags["round"] == "2"
    assert len(c.search_model_versions("name = 'm'")) == 2
    versions.point_alias(tracking.uri, "m", "champion", None)  # back to the base model
    assert versions.current_champion(c, "m") is None
    versions.point_alias(tracking.uri, "m", "champion", None)  # and again: nothing to remove, no error
    logged = c.get_model_version("m", registered[0])
    model_id = logged.source.removeprefix("models:/")  # the version points at the round run's logged model
    assert c.get_logged_model(model_id).source_run_id == logged.run_id
    downloaded = mlflow.artifacts.download_artifacts(logged.source, dst_path=str(tmp_path / "download"))
    assert (Path(downloaded) / "adapter_config.json").exists()


def test_a_round_from_another_champion_supersedes_the_first_and_gives_it_back(tmp_path):
    adapter = adapter_dir(tmp_path)
    with open_bootstrap(tmp_path) as tracking:
        with lineage.round_run(tracking, 2, "champion-a", "fr") as first:
            tags = {"base": "tiny", "adapter_chain": [str(adapter)], "round": 2}
            version = versions.register_adapter(tracking.uri, tracking.model_name, first.run_id, adapter, tags)
            lineage.log_decision(tracking, first, 2, {"reason": "a", "promote": False})
        with lineage.round_run(tracking, 2, "champion-b", "fr") as second:
            lineage.log_decision(tracking, second, 2, {"reason": "b", "promote": False})
    client = MlflowClient(tracking.uri)
    assert second.run_id != first.run_id
    assert client.get_run(first.run_id).data.tags[lineage.SUPERSEDED_TAG] == "true"
    # Its own adapter is still in MLflow: the version loads by its model URI ...
    source = client.get_model_version(tracking.model_name, version).source
    assert versions.checkpoint(client, tracking.model_name, version)["adapter_uris"] == [source]
    # ... but by path alone (a version registered before versions named their URIs) the directory is another's.
    client.delete_model_version_tag(tracking.model_name, version, "adapter_uris")
    with pytest.raises(versions.MlflowException, match="superseded"):
        versions.checkpoint(client, tracking.model_name, version)
    assert [r["decision"] for r in compare.round_table(client, "exp")[1]] == ["b"]
    with open_bootstrap(tmp_path) as tracking, lineage.round_run(tracking, 2, "champion-a", "fr") as back:
        assert back.run_id == first.run_id and back.logged  # champion a again: its round is taken back
    assert versions.checkpoint(client, tracking.model_name, version)["adapters"] == [str(adapter)]
    assert [r["decision"] for r in compare.round_table(client, "exp")[1]] == ["a"]


def registered(tmp_path, rounds: int) -> list[str]:
    adapter, made = adapter_dir(tmp_path), []
    with open_bootstrap(tmp_path, "b-3") as tracking:
        for k in range(1, rounds + 1):
            with lineage.round_run(tracking, k, f"c{k}", "fr") as run:
                name = "win_rate" if k == 1 else "judge/win_rate"  # round 1 as runs before the metric groups
                lineage.log_round(tracking, run, k, {name: k / 10}, tmp_path)
                lineage.log_decision(tracking, run, k, {"reason": f"round {k}", "promote": False})
                chain = {"base": "tiny", "adapter_chain": [f"/a/{i}" for i in range(1, k + 1)], "round": k}
                made.append(versions.register_adapter(tracking.uri, "ratchet-exp", run.run_id, adapter, chain))
    return made


def test_manual_moves_are_recorded_and_rollback_walks_back_through_champions(tmp_path):
    v1, v2, v3 = registered(tmp_path, 3)
    client = lineage.client_for(lineage.tracking_uri_for(tmp_path))
    versions.set_alias(client, "ratchet-exp", "champion", v1)  # the gate promoted round 1, blocked round 2
    run_id = versions.move_champion(client, "exp", v3, "promote", "reviewed the samples")
    assert versions.current_champion(client, "ratchet-exp") == v3
    move = client.get_run(run_id)
    assert move.data.params == {"from_version": v1, "to_version": v3, "reason": "reviewed the samples"}
    assert move.data.tags["ratchet.kind"] == "alias-move" and move.info.status == "FINISHED"

    assert versions.previous_champion(client, "ratchet-exp") == v1  # v2 was never champion
    versions.move_champion(client, "exp", v1, "rollback", "")
    assert versions.previous_champion(client, "ratchet-exp") is None  # before v1 came the base model
    versions.move_champion(client, "exp", None, "rollback", "")
    assert versions.current_champion(client, "ratchet-exp") is None
    assert versions.checkpoint(client, "ratchet-exp", v3)["adapters"] == ["/a/1", "/a/2", "/a/3"]


def test_round_table_reads_the_newest_bootstrap(tmp_path):
    registered(tmp_path, 2)
    client = lineage.client_for(lineage.tracking_uri_for(tmp_path))
    bootstrap_id, rows, level = compare.round_table(client, "exp")
    assert bootstrap_id == "b-3" and level == 0.95  # no evaluation.ci_level param: the level before it existed
    assert [(r["round"], r["judge/win_rate"], r["decision"]) for r in rows] == [
        (1, 0.1, "round 1"),
        (2, 0.2, "round 2"),
    ]


def test_a_new_store_is_a_copy_of_an_empty_one_migrated_once_per_machine(tmp_path, monkeypatch):
    """Each new store starts from the same migrated template (made on the first store, then only copied), is a
    store of its own, keeps its Default experiment's artifacts beside it, and opens at MLflow's schema."""
    from registry import sqlite_store

    monkeypatch.setenv("RATCHET_CACHE", str(tmp_path / "cache"))
    first = lineage.client_for(lineage.tracking_uri_for(tmp_path / "a"))
    [template] = (tmp_path / "cache").glob("mlflow-*-empty.db")
    made = template.stat().st_mtime_ns
    second = lineage.client_for(lineage.tracking_uri_for(tmp_path / "b"))
    assert template.stat().st_mtime_ns == made and sqlite_store.template() == template

    first.create_registered_model("only-in-a")
    first_id = lineage.ensure_experiment(first, "exp", tmp_path / "a" / "mlartifacts")
    assert [m.name for m in second.search_registered_models()] == []
    assert second.get_experiment_by_name("exp") is None
    assert first.get_experiment(first_id).name == "exp"
    for name, client in (("a", first), ("b", second)):
        assert client.get_experiment("0").artifact_location == str(tmp_path / name / "mlartifacts" / "0")
    assert not list(tmp_path.glob("*/.mlflow.db.partial"))
    # A store that already exists is opened as it is, not replaced by the template (as by another process).
    sqlite_store.initialise.cache_clear()
    again = lineage.client_for(lineage.tracking_uri_for(tmp_path / "a"))
    assert [m.name for m in again.search_registered_models()] == ["only-in-a"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["mlflow.db", "mlflow.db.lock"]

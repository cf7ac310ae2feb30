"""Two bootstraps at once on one MLflow sqlite store and one Prefect server: both finish, and each keeps its own
lineage (parent run, child runs, registered model versions and aliases)."""

from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient
from ratchet_process import finish, ratchet_run

from registry import lineage

pytestmark = pytest.mark.slow  # two tiny bootstraps at once plus a Prefect server; `make test-slow`


def test_two_bootstraps_share_a_store_and_a_server_without_mixing_lineage(prefect_server, write_tiny_config, tmp_path):
    store = tmp_path / "store"
    configs = {}
    for name in ("alpha", "beta"):
        directory = tmp_path / name
        directory.mkdir()
        config = write_tiny_config(directory, rounds=1)
        cfg = yaml.safe_load(config.read_text()) | {"name": name}
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        configs[name] = config

    procs = {
        name: ratchet_run(config, store, home=tmp_path / f"{name}-home", PREFECT_API_URL=prefect_server.url)
        for name, config in configs.items()
    }
    for name, proc in procs.items():
        finish(proc, tmp_path / f"{name}-home")

    client = MlflowClient(lineage.tracking_uri_for(store))
    for name in configs:
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        [parent] = [r for r in runs if r.data.tags.get("ratchet.kind") != "round"]
        [child] = [r for r in runs if r.data.tags.get("ratchet.kind") == "round"]
        assert {parent.info.status, child.info.status} == {"FINISHED"}
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        versions = client.search_model_versions(f"name = '{lineage.model_name_for(name)}'")
        assert [v.run_id for v in versions] == [child.info.run_id]  # its own adapter, logged by its own round
        assert versions[0].tags["bootstrap_id"] == parent.info.run_name
        assert str(client.get_model_version_by_alias(lineage.model_name_for(name), "challenger").version) == "1"

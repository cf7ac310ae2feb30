"""prefect.yaml for real: a Prefect server on localhost, a process worker, `prefect deploy --all`, and
`prefect deployment run` with parameters, exactly as the README shows; then `ratchet serve` runs the `evaluate`
deployment. The tiny model keeps it within CI's budget."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import lineage, versions

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"

pytestmark = pytest.mark.e2e


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def client_of(prefect):
    """Prefect's own client in this process (a `prefect` CLI process is ~3 s of CPU); like the CLI's, it retries
    the server's 503s (a busy SQLite)."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(prefect.url)


def is_deployed(prefect, name: str) -> bool:
    """Whether the server knows the deployment yet."""
    from prefect.exceptions import ObjectNotFound

    with client_of(prefect) as client:
        try:
            client.read_deployment_by_name(name)
            return True
        except ObjectNotFound:
            return False


def shows_values(prefect, name: str) -> bool:
    """Whether the deployment exists and its form holds a value for `rounds`."""
    if not is_deployed(prefect, name):
        return False
    with client_of(prefect) as client:
        schema = client.read_deployment_by_name(name).parameter_openapi_schema
    return schema["properties"]["rounds"]["default"] is not None


def assert_forms_show_their_configs_values(prefect) -> None:
    """Read back from the server: each bootstrap deployment's form holds its own config's values, and no testing-only
    judge."""
    from components.config.loading import load_config

    with client_of(prefect) as client:
        for name, config in (("smoke", "configs/smoke.yaml"), ("default", "configs/default.yaml")):
            schema = client.read_deployment_by_name(f"bootstrap/{name}").parameter_openapi_schema
            cfg = load_config(ROOT / config)
            found = {knob: schema["properties"][knob]["default"] for knob in ("rounds", "learning_rate", "lora_r")}
            assert found == {
                "rounds": cfg.rounds,
                "learning_rate": cfg.training.learning_rate,
                "lora_r": cfg.training.lora_r,
            }
            assert schema["properties"]["training_judge"]["default"] == cfg.judge.model_dump(mode="json")
            assert "BiasedJudgeConfig" not in json.dumps(schema) and '"biased"' not in json.dumps(schema)
            assert "Empty: the config's value." in schema["properties"]["rounds"]["description"]


def test_deploy_from_prefect_yaml_and_run_with_a_worker_then_serve(
    prefect_server, write_tiny_config, tmp_path, tmp_path_factory
):
    prefect = prefect_server
    config = write_tiny_config(tmp_path)

    # The README's sequence: work pool, deploy --all from the project directory, a process worker, a run.
    ok(prefect.cli("work-pool", "create", "ratchet", "--type", "process"))
    deployed = ok(prefect.cli("--no-prompt", "deploy", "--all"))
    for name in ("bootstrap/smoke", "bootstrap/default", "evaluate/evaluate"):
        assert name in deployed
    worker = prefect.start("worker", str(BIN / "prefect"), "worker", "start", "--pool", "ratchet")
    forms = subprocess.run(  # as README shows it, after the deploy
        [str(BIN / "python"), "-m", "flows.deploy_forms"], cwd=ROOT, env=prefect.env, capture_output=True, text=True
    )
    assert {"smoke", "default"} == set(ok(forms).split(": ", 1)[1].strip().split(", "))
    assert_forms_show_their_configs_values(prefect)

    # Prefect's server validates the form's fields against the flow's typed signature (the config's rules) before
    # any run: the UI's form and `prefect deployment run --param` both send them to this endpoint.
    from prefect.exceptions import PrefectHTTPStatusError

    with client_of(prefect) as prefect_client:
        deployment = prefect_client.read_deployment_by_name("bootstrap/smoke")
        for field, value in (("rounds", 0), ("learning_rate", -1), ("method", "ppo"), ("on_block", "pause")):
            with pytest.raises(PrefectHTTPStatusError) as rejected:
                prefect_client.create_flow_run_from_deployment(deployment.id, parameters={field: value})
            assert rejected.value.response.status_code == 409 and field in rejected.value.response.text, field

    params = ["--param", f"config={config}", "--param", "rounds=1", "--param", f"store={tmp_path}"]
    params += ["--param", "learning_rate=0.0001", "--param", "samples_per_prompt=3"]  # knobs; the rest: the YAML's
    params += ["--param", 'overrides={"gate.rules": []}']  # no rules: promoted
    run = prefect.cli("deployment", "run", "bootstrap/smoke", *params, "--watch", "--watch-timeout", "600", timeout=660)
    assert run.returncode == 0 and "COMPLETED" in run.stdout.upper(), run.stdout + run.stderr + prefect.log("worker")

    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    experiment = client.get_experiment_by_name("tiny")
    [parent] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'bootstrap'")
    [child] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'round'")
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["prefect.flow_run_id"] in run.stdout  # MLflow links back to the Prefect flow run
    assert "task/task_completion_delta" in parent.data.metrics
    assert parent.data.params["training.learning_rate"] == "0.0001" and parent.data.tags["ratchet.rounds"] == "1"
    assert parent.data.params["generation.samples_per_prompt"] == "3" and parent.data.params["seed"] == "0"
    [version] = client.search_model_versions("name = 'ratchet-tiny'")
    assert str(client.get_model_version_by_alias("ratchet-tiny", "challenger").version) == str(version.version)
    decision = json.loads(
        Path(client.download_artifacts(child.info.run_id, "decision.json", str(tmp_path))).read_text()
    )
    assert decision["promote"] and versions.current_champion(client, "ratchet-tiny") == str(version.version)

    # A form's path outside the allowed directories (the project and, in tests, the session's temporary directory:
    # conftest.py) fails the run before anything is written there.
    elsewhere = tmp_path_factory.getbasetemp().parent / f"elsewhere-{tmp_path.name}"
    overrides = json.dumps({"workdir": str(elsewhere)})
    refused = prefect.cli(
        "deployment", "run", "bootstrap/smoke", "--param", f"config={config}", "--param", f"store={tmp_path}",
        "--param", f"overrides={overrides}", "--watch", "--watch-timeout", "300", timeout=360,
    )  # fmt: skip
    assert refused.returncode != 0 and "FAILED" in refused.stdout.upper(), refused.stdout + refused.stderr
    assert f"workdir: '{elsewhere}' is outside the directories" in prefect.log("worker")
    assert not elsewhere.exists()

    # `ratchet serve` serves the same deployments from one process, instead of the worker; it runs `evaluate`.
    prefect.halt(worker)  # SIGKILL after 30 s: the worker can hang on SIGTERM while its flow-run process exits
    conflict = subprocess.run(
        [str(BIN / "ratchet"), "serve"], cwd=ROOT, env=prefect.env, capture_output=True, text=True
    )
    assert conflict.returncode == 2 and "deployed to work pool 'ratchet'" in conflict.stderr
    with client_of(prefect) as prefect_client:
        for name in ("bootstrap/smoke", "bootstrap/default", "evaluate/evaluate"):
            prefect_client.delete_deployment(prefect_client.read_deployment_by_name(name).id)
    prefect.start("serve", str(BIN / "ratchet"), "serve")
    deadline = time.monotonic() + 120
    while not is_deployed(prefect, "evaluate/evaluate") or "serve" not in prefect.log("serve").lower():
        assert time.monotonic() < deadline, prefect.log("serve")
        time.sleep(1)
    while not all(shows_values(prefect, name) for name in ("bootstrap/smoke", "bootstrap/default")):
        assert time.monotonic() < deadline, prefect.log("serve")  # served deployments get their forms too
        time.sleep(1)
    assert_forms_show_their_configs_values(prefect)
    evaluation = prefect.cli(
        "deployment",
        "run",
        "evaluate/evaluate",
        "--param",
        f"config={config}",
        "--param",
        f"challenger={version.version}",
        "--param",
        "champion=base",
        "--param",
        f"store={tmp_path}",
        "--watch",
        "--watch-timeout",
        "300",
        timeout=360,
    )
    assert evaluation.returncode == 0, evaluation.stdout + evaluation.stderr + prefect.log("serve")
    [run] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'evaluation'")
    assert run.info.run_name == f"evaluate v{version.version}-vs-base"
    assert run.data.metrics["task/task_completion_delta"] == pytest.approx(
        parent.data.metrics["task/task_completion_delta"]
    )

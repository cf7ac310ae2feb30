"""Cached resume for real: `ratchet run` is killed with SIGKILL in the middle of training, then run again with the
same command. Finished stages are not re-run, training resumes from its checkpoint, nothing is duplicated in MLflow,
and the outputs equal those of an uninterrupted run of the same config and seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from components.data import load_rows
from registry import lineage

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"

pytestmark = pytest.mark.e2e

# Long enough training (12 steps, a checkpoint every 2) that the kill lands inside it.
TRAINING = {"epochs": 6, "batch_size": 4, "checkpoint_every": 2}


def ratchet_run(config: Path, store: Path, prefect_home: Path) -> subprocess.Popen:
    env = os.environ | {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # its own temporary server, as `make run` has
    log = open(store / "run.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(BIN / "ratchet"), "run", str(config), "--store", str(store)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the kill takes its temporary Prefect server down with it
    )


def finish(proc: subprocess.Popen, store: Path) -> None:
    assert proc.wait(timeout=900) == 0, (store / "run.log").read_text()[-5000:]


def kill_during_training(proc: subprocess.Popen, workdir: Path, store: Path) -> None:
    deadline = time.monotonic() + 600
    # After a complete checkpoint (the Trainer writes trainer_state.json last), so that resuming is certain.
    while not list(workdir.glob("*/round-1/.adapter.checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, "the run ended before training checkpointed: " + (store / "run.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_bootstrap_resumes_without_redoing_or_duplicating(write_tiny_config, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for d in (killed, clean):
        d.mkdir()
    configs = {d: write_tiny_config(d, rounds=1, training=TRAINING) for d in (killed, clean)}

    uninterrupted = ratchet_run(configs[clean], clean, clean / "prefect")
    proc = ratchet_run(configs[killed], killed, killed / "prefect")
    kill_during_training(proc, killed / "runs", killed)
    [out] = list((killed / "runs").iterdir())
    round_1 = out / "round-1"
    assert not (round_1 / "adapter").exists()  # killed mid-stage: nothing published as finished
    finished = {p: p.stat().st_mtime_ns for p in (round_1 / "generations", round_1 / "pairs")}

    finish(ratchet_run(configs[killed], killed, killed / "prefect"), killed)
    finish(uninterrupted, clean)

    # Finished stages were not re-run, and training picked up its checkpoint.
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert json.loads((round_1 / "adapter" / "train_metrics.json").read_text())["resumed"] is True

    # Nothing duplicated: one bootstrap run, one run per round, one model version per trained round, none RUNNING.
    client = MlflowClient(lineage.tracking_uri_for(killed))
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment])
    assert sorted(r.info.run_name for r in runs) == sorted(["round-1", out.name])
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(client.search_model_versions("name = 'ratchet-tiny'")) == 1

    # Same outputs as the uninterrupted run with the same seed.
    [reference] = list((clean / "runs").iterdir())
    a, b = round_1, reference / "round-1"
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for stage in ("generations", "pairs", "eval"):
        assert load_rows(a / stage).to_list() == load_rows(b / stage).to_list(), stage
    weights_a = load_file(a / "adapter" / "adapter_model.safetensors")
    weights_b = load_file(b / "adapter" / "adapter_model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=1e-4, atol=1e-6)

"""Crash in every stage: `ratchet run` is killed with SIGKILL while generate, judge, train and evaluate run in turn,
each time run again with the same command. Each re-run resumes without re-running finished stages, and the run
that completes leaves nothing duplicated or RUNNING in MLflow and the outputs of an uninterrupted run of the same
config and seed. (One bootstrap killed in each stage in turn: five runs, where a bootstrap per stage took eight.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow import MlflowClient
from ratchet_process import finish, ratchet_run, run_log
from safetensors.torch import load_file

from components.data import load_rows
from components.training.trainer import resumable
from registry import lineage

pytestmark = pytest.mark.slow  # two tiny bootstraps in six runs; `make test-slow` (CI runs it)

# Training of 12 steps with a checkpoint every 2, so the kill during training lands after a checkpoint and
# resuming is certain. The other stages are caught while their temp directory exists (model load included).
CHANGES = {"rounds": 1, "training": {"num_train_epochs": 6, "per_device_train_batch_size": 4, "save_steps": 2}}
STAGES = ("generations", "pairs", "adapter", "eval")  # the directories of generate, judge, train, evaluate


def in_progress(round_dir: Path, stage: str) -> bool:
    if stage == "adapter":  # once a whole checkpoint exists
        return any(resumable(p) for p in round_dir.glob(".adapter.checkpoints/checkpoint-*"))
    return bool(list(round_dir.glob(f".{stage}.tmp-*")))


def kill_during(stage: str, proc: subprocess.Popen, workdir: Path, store: Path) -> Path:
    """SIGKILL the run's process group while `stage` is being written; return the round directory."""
    deadline = time.monotonic() + 600
    while True:
        rounds = list(workdir.glob("*/round-1"))
        if rounds and in_progress(rounds[0], stage):
            break
        assert proc.poll() is None, f"the run ended before {stage} was caught: " + run_log(store)
        assert not (rounds and (rounds[0] / stage).exists()), f"{stage} finished before the kill could land"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    started = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(started, timeout=15)  # the temporary Prefect server, in its own session, too
    assert alive == [], [p.cmdline() for p in alive]
    return rounds[0]


@pytest.fixture(scope="module")
def uninterrupted(write_tiny_config, tmp_path_factory) -> Path:
    """Round 1 of the same config and seed, never killed: the outputs every resumed run must equal."""
    store = tmp_path_factory.mktemp("uninterrupted")
    finish(ratchet_run(write_tiny_config(store, **CHANGES), store), store)
    [round_1] = (store / "runs").glob("*/round-1")  # beside the bootstrap: the run store's memo
    return round_1


def test_killed_in_each_stage_in_turn_resumes_each_time_without_redoing_or_duplicating(
    uninterrupted, write_tiny_config, tmp_path
):
    """One bootstrap killed four times, once in each stage: each re-run resumes it, skips what the runs before it
    finished, and is itself killed in the next stage; the fifth run completes it."""
    config, finished = write_tiny_config(tmp_path, **CHANGES), {}
    for i, stage in enumerate(STAGES):
        round_1 = kill_during(stage, ratchet_run(config, tmp_path), tmp_path / "runs", tmp_path)
        assert not (round_1 / stage).exists()  # killed mid-stage: nothing published as finished
        # The run just killed resumed the one before: the stages that had finished were not run again.
        assert {s: (round_1 / s).stat().st_mtime_ns for s in finished} == finished
        finished = {s: (round_1 / s).stat().st_mtime_ns for s in STAGES[:i]}

    finish(ratchet_run(config, tmp_path), tmp_path)

    assert {s: (round_1 / s).stat().st_mtime_ns for s in finished} == finished
    assert not list(round_1.glob(".*.tmp-*"))  # the killed stages' temp dirs were cleared
    assert json.loads((round_1 / "adapter" / "train_metrics.json").read_text())["resumed"] is True

    # Nothing duplicated: one bootstrap run, one run per round, one model version, none RUNNING.
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(["round-1", round_1.parent.name])
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(client.search_model_versions("name = 'ratchet-tiny'")) == 1

    # Same outputs as the uninterrupted run with the same seed.
    assert sorted(p.name for p in round_1.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())
    for name in ("generations", "pairs", "eval"):
        assert load_rows(round_1 / name).to_list() == load_rows(uninterrupted / name).to_list(), name
    weights = load_file(round_1 / "adapter" / "adapter_model.safetensors")
    reference = load_file(uninterrupted / "adapter" / "adapter_model.safetensors")
    assert weights.keys() == reference.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], reference[name], rtol=1e-4, atol=1e-6)

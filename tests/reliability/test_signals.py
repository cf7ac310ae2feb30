"""Signals stop a run cleanly, in every stage: SIGTERM to the `ratchet` process alone (as `kill PID`, systemd and
Kubernetes send it) in generate, train and evaluate, and to its whole process group as a terminal's Ctrl-C (SIGINT,
in judge) and `timeout` (SIGTERM, in train) send it. Each time
`ratchet run` exits within 10 s, every process it started is gone (its temporary Prefect server, the vLLM worker),
the MLflow runs it had open end KILLED, no stage directory looks complete that is not, and the same command then
resumes.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import yaml
from ratchet_process import finish, ratchet_run, run_log, runs_by_status

from components.data import load_rows
from components.training.trainer import resumable

pytestmark = pytest.mark.slow  # tiny bootstraps, stopped and resumed (seven runs); `make test-slow`

STAGES = ("generations", "pairs", "adapter", "eval")
# Training of 20 steps with a checkpoint every 2, so each stop during it has a checkpoint to resume from and the
# run that resumes it still has steps to go (30 epochs trained 60 steps, ~15 s more CPU); the other stages are
# caught while their temp directory exists.
CHANGES = {"rounds": 1, "training": {"num_train_epochs": 10, "per_device_train_batch_size": 2, "save_steps": 2}}


def checkpoints(round_dir: Path) -> set[str]:
    """The training checkpoints that are whole."""
    return {p.name for p in round_dir.glob(".adapter.checkpoints/checkpoint-*") if resumable(p)}


def in_progress(round_dir: Path, stage: str, earlier: set[str]) -> bool:
    """Whether `stage` is being written; training once it has saved a checkpoint that is not in `earlier`."""
    if stage == "adapter":
        return bool(checkpoints(round_dir) - earlier)
    return bool(list(round_dir.glob(f".{stage}.tmp-*")))


def stop_during(stage: str, proc, workdir: Path, home: Path, how) -> tuple[float, set[int]]:
    """Wait for `stage` to be written, send the signal with `how(proc)`; return the seconds until the run exited
    and the pids of every process the run had started. Training is caught after a checkpoint this run saved."""
    started: set[int] = set()
    earlier = set().union(*(checkpoints(r) for r in workdir.glob("*/round-1")))
    deadline = time.monotonic() + 600
    for poll in itertools.count():
        # The process tree every 0.25 s (a walk of /proc is ~1-3 ms of CPU), the stage every 5 ms (its temp
        # directory can live for less than a second).
        if poll % 50 == 0:
            started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        rounds = list(workdir.glob("*/round-1"))
        if rounds and in_progress(rounds[0], stage, earlier):
            break
        assert proc.poll() is None, f"the run ended before {stage} was caught: " + run_log(home)
        assert time.monotonic() < deadline
        time.sleep(0.005)
    started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    sent = time.monotonic()
    how(proc)
    proc.wait(timeout=60)
    return time.monotonic() - sent, started


def assert_stopped_cleanly(
    code: int, seconds: float, started: set[int], home: Path, store: Path, workdir: Path, since: int = 0
):
    """`since`: where this run's output starts in the log (runs of one bootstrap append to it)."""
    log = run_log(home)[since:]
    assert seconds <= 10, f"took {seconds:.1f} s to stop: " + log[-3000:]
    assert code in (128 + signal.SIGTERM, 128 + signal.SIGINT), log[-3000:]
    assert "error: stopped by SIG" in log and "re-run the same command to resume" in log
    alive = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == [], [psutil.Process(pid).cmdline() for pid in alive]
    statuses = runs_by_status(store)
    assert set(statuses) <= {"KILLED", "FINISHED"} and statuses.get("KILLED"), statuses
    for round_dir in workdir.glob("*/round-*"):
        for stage in ("generations", "pairs", "eval"):
            if (round_dir / stage).exists():
                load_rows(round_dir / stage)  # published only when whole


def only_ratchet(proc) -> None:
    os.kill(proc.pid, signal.SIGTERM)


def whole_group(sig: int):
    return lambda proc: os.killpg(proc.pid, sig)


# Each stop of one bootstrap, in order: a signal in every stage, SIGTERM to `ratchet` alone (as `kill PID`, systemd
# and Kubernetes send it) or to the whole process group, as a terminal's Ctrl-C (SIGINT) and `timeout` (SIGTERM)
# send it; in training both ways, each after a checkpoint of its own. Each run resumes the one before and is
# stopped in turn; the last one completes.
STOPS = [
    ("generations", "SIGTERM to ratchet", only_ratchet),
    ("pairs", "SIGINT to the group (Ctrl-C)", whole_group(signal.SIGINT)),
    ("adapter", "SIGTERM to ratchet", only_ratchet),
    ("adapter", "SIGTERM to the group (timeout)", whole_group(signal.SIGTERM)),
    ("eval", "SIGTERM to ratchet", only_ratchet),
]


def test_a_signal_in_each_stage_stops_the_run_cleanly_and_the_next_run_resumes(write_tiny_config, tmp_path):
    """One bootstrap stopped five times (six runs, where a bootstrap per case took ten)."""
    config = write_tiny_config(tmp_path, **CHANGES)
    for stage, what, how in STOPS:
        since = len(run_log(tmp_path)) if (tmp_path / "run.log").exists() else 0
        proc = ratchet_run(config, tmp_path)
        seconds, started = stop_during(stage, proc, tmp_path / "runs", tmp_path, how)
        try:
            assert_stopped_cleanly(proc.returncode, seconds, started, tmp_path, tmp_path, tmp_path / "runs", since)
        except AssertionError as failed:
            raise AssertionError(f"{what} during {stage}: {failed}") from failed

    finish(ratchet_run(config, tmp_path), tmp_path)
    assert set(runs_by_status(tmp_path)) == {"FINISHED"}
    [round_1] = (tmp_path / "runs").glob("*/round-1")
    assert all((round_1 / s).exists() for s in STAGES)
    assert '"resumed": true' in (round_1 / "adapter" / "train_metrics.json").read_text()


def test_sigterm_stops_the_vllm_worker_with_the_run(tiny_vllm_model_dir, write_tiny_config, tmp_path):
    pytest.importorskip("vllm", reason="the [vllm] extra is not installed")
    config = write_tiny_config(tmp_path, **CHANGES)
    cfg = yaml.safe_load(config.read_text())
    cfg["models"]["policy"] = tiny_vllm_model_dir
    cfg["generation"] = {"kind": "vllm", "samples_per_prompt": 4, "max_new_tokens": 8}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = ratchet_run(config, tmp_path)
    deadline, worker = time.monotonic() + 300, []
    while not worker:
        children = psutil.Process(proc.pid).children(recursive=True)
        worker = [p for p in children if "components.generation.vllm_worker" in " ".join(p.cmdline())]
        assert proc.poll() is None and time.monotonic() < deadline, run_log(tmp_path)
        time.sleep(0.2)
    time.sleep(5)  # the engine is starting: its own processes exist now
    started = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    sent = time.monotonic()
    only_ratchet(proc)
    proc.wait(timeout=60)
    assert_stopped_cleanly(proc.returncode, time.monotonic() - sent, started, tmp_path, tmp_path, tmp_path / "runs")

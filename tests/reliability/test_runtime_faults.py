"""Faults that only show once a run has started. Each run either completes with the fault counted and logged (a
judge replying garbage), or stops with a one-line `error:` and a non-zero exit, leaving no MLflow run RUNNING and no
stage directory that looks complete but is not.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psutil
import pytest
import yaml
from datasets import load_from_disk
from mlflow import MlflowClient
from ratchet_process import finish, ratchet_run, run_log, runs_by_status

from registry import lineage

pytestmark = pytest.mark.slow  # four tiny bootstraps that fail or limp on purpose (~4 min); `make test-slow`

STAGES = ("generations", "pairs", "adapter", "eval")


def edit(config: Path, **sections) -> Path:
    cfg = yaml.safe_load(config.read_text())
    for key, value in sections.items():
        cfg[key] = cfg[key] | value if isinstance(value, dict) else value
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def assert_failed_cleanly(output: str, store: Path, workdir: Path, expected: str) -> None:
    """One-line error naming the fault; no run left RUNNING; every stage dir present is complete."""
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: the bootstrap failed: "), output[-3000:]
    assert expected in errors[0], errors[0]
    if (store / "mlflow.db").exists():
        statuses = runs_by_status(store)
        assert "RUNNING" not in statuses and statuses.get("FAILED"), statuses
    for round_dir in workdir.glob("*/round-*"):
        assert not list(round_dir.glob(".*.tmp-*")), list(round_dir.iterdir())
        for stage in STAGES:
            if (round_dir / stage).exists() and stage != "adapter":
                load_from_disk(str(round_dir / stage))  # a published stage is a whole dataset


class GarbageJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose replies name no answer."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"message": {"content": "Bananas are yellow."}, "logprobs": None}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@contextmanager
def garbage_judge_server():
    server = HTTPServer(("127.0.0.1", 0), GarbageJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()


def test_a_judge_replying_garbage_is_counted_as_abstentions_and_the_run_goes_on(write_tiny_config, tmp_path):
    with garbage_judge_server() as url:
        config = edit(
            write_tiny_config(tmp_path),
            rounds=1,
            evaluation={"judge": {"kind": "remote", "base_url": url, "model": "m"}},
        )
        output = finish(ratchet_run(config, tmp_path / "store"), tmp_path / "store")
    client = MlflowClient(lineage.tracking_uri_for(tmp_path / "store"))
    [round_run] = [
        r
        for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        if r.info.run_name == "round-1"
    ]
    assert round_run.data.metrics["judge/judge_abstention_rate"] == 1.0  # every held-out verdict: counted, not guessed
    assert round_run.data.metrics["judge/win_rate"] == 0.5
    assert "round 1:" in output


def test_an_unreachable_remote_judge_fails_the_run_after_bounded_retries_and_it_exits_at_once(
    write_tiny_config, tmp_path
):
    """The run fails in evaluation (its remote judge does not answer, twice); it says so in one line, exits within
    10 s of saying it, and takes every process it started with it (its temporary Prefect server too)."""
    judge = {"kind": "remote", "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 1}
    config = edit(write_tiny_config(tmp_path), rounds=1, evaluation={"judge": judge})
    store = tmp_path / "store"
    proc, started = ratchet_run(config, store), set()
    while proc.poll() is None:
        started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        if "error: the bootstrap failed" in run_log(store):
            break
        time.sleep(0.05)
    failed = time.monotonic()
    output = finish(proc, store, expect=1)
    assert time.monotonic() - failed <= 10, output[-3000:]
    assert [pid for pid in started if psutil.pid_exists(pid)] == []
    unreachable = "EndpointError: the remote judge m at http://127.0.0.1:9/v1: cannot reach it"
    assert_failed_cleanly(output, store, tmp_path / "runs", unreachable)
    assert set(runs_by_status(store)) == {"FAILED"}
    assert not list((tmp_path / "runs").glob("*/round-1/eval"))


@contextmanager
def mounted(target: Path, *options: str):
    """A real mount (root only): a small tmpfs, or a read-only bind; unmounted afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({proc.stderr.strip()}); needs root, as on the CI machines")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_full_disk_stops_the_run_with_one_line_and_nothing_half_written(write_tiny_config, tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=600k", "tmpfs") as small:
        config = edit(write_tiny_config(tmp_path), rounds=1, workdir=str(small / "runs"))
        output = finish(ratchet_run(config, tmp_path / "store"), tmp_path / "store", expect=1)
        assert_failed_cleanly(output, tmp_path / "store", small / "runs", "No space left on device")


def test_a_read_only_mlflow_store_is_refused_before_any_work(write_tiny_config, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "--bind", str(store), str(store)], check=False)
    with mounted(store, "-o", "remount,bind,ro"):
        config = write_tiny_config(tmp_path)
        output = finish(ratchet_run(config, store, home=tmp_path / "home"), tmp_path / "home", expect=2)
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --store {store}: cannot write there: Read-only file system"]
    assert list(store.iterdir()) == [] and not (tmp_path / "runs").exists()

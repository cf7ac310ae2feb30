"""`ratchet run` as a user runs it: a subprocess with its own temporary Prefect server (unless PREFECT_API_URL is
given), its output in <home>/run.log; home is the store directory unless said otherwise."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import migrated_prefect_home
from mlflow import MlflowClient

from registry import lineage

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


def ratchet_run(config: Path, store: Path, home: Path | None = None, **env: str) -> subprocess.Popen:
    home = home or store
    home.mkdir(parents=True, exist_ok=True)
    full_env = os.environ | {"PREFECT_HOME": str(migrated_prefect_home(home / "prefect"))} | env
    if "PREFECT_API_URL" not in env:
        full_env.pop("PREFECT_API_URL", None)  # its own temporary server, as `make run` has
    full_env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    log = open(home / "run.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(BIN / "ratchet"), "run", str(config), "--store", str(store)],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a group kill reaches the run; its Prefect server follows (parent-death signal)
    )


def run_log(home: Path) -> str:
    return (home / "run.log").read_text()


def finish(proc: subprocess.Popen, home: Path, expect: int = 0) -> str:
    """Wait for the run; assert its exit code; return its output."""
    code = proc.wait(timeout=900)
    assert code == expect, run_log(home)[-5000:]
    return run_log(home)


def runs_by_status(store: Path) -> dict[str, list[str]]:
    """Every MLflow run in the store by status: name lists under FINISHED, FAILED, RUNNING, ..."""
    client = MlflowClient(lineage.tracking_uri_for(store))
    statuses: dict[str, list[str]] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            statuses.setdefault(run.info.status, []).append(run.info.run_name)
    return statuses

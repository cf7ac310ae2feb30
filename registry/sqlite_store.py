"""A local MLflow store (sqlite) as its first client finds it: created, with MLflow's schema, once.

A new database gets MLflow's schema by running every one of its migrations (~100), which took 2-3 s at the start of
each new store's first run. The schema depends on the MLflow version alone, so a store migrated once per machine and
version serves as the template that each new store copies.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from components.cache_dir import cache_root


@functools.cache
def initialise(tracking_uri: str) -> None:
    """Give the store at `tracking_uri` (sqlite:///...) its schema if it has none. Two bootstraps starting at once
    would both create it, and one fails: a lock beside the database makes the first one do it alone (once per
    process)."""
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            _copy_template(database)
        MlflowClient(tracking_uri).search_registered_models(max_results=1)  # checks the schema is MLflow's own


def template() -> Path:
    """An empty store at this MLflow version's schema, made once for this machine."""
    path = cache_root() / f"mlflow-{mlflow.__version__}-empty.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as directory:
            fresh = Path(directory) / "mlflow.db"
            MlflowClient(f"sqlite:///{fresh}").search_registered_models(max_results=1)  # creates and migrates it
            os.replace(fresh, path)  # whole or not at all, should two processes make it at once
    return path


def _copy_template(database: Path) -> None:
    """`database` as a copy of the template whose Default experiment keeps its artifacts beside it (MLflow set it to
    the working directory of the process that made the template)."""
    partial = database.with_name(f".{database.name}.partial")
    shutil.copyfile(template(), partial)
    connection = sqlite3.connect(partial)
    with connection:
        location = str(database.parent / "mlartifacts" / "0")
        connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,))
    connection.close()
    os.replace(partial, database)

"""Copy a local MLflow store (./mlflow.db and ./mlartifacts) into the stack's PostgreSQL-backed tracking server.

MLflow ships a migration from its file store to SQLite (`mlflow migrate-filestore`), not from SQLite to another
database. So this uses MLflow's own means where they exist: `mlflow db upgrade` brings the SQLite schema to the
version the server created in PostgreSQL (MLflow's alembic migrations), the rows are copied table by table with
their ids (run ids, version numbers and the tags that name them stay valid, so `ratchet compare` and resumes find
past bootstraps), and the artifacts go up through the server's artifact proxy. Artifact URIs that pointed at the
local directory are rewritten to the proxy's `mlflow-artifacts:/`, which is where the upload puts them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from registry.accounts import client_environment

SKIPPED_TABLES = {"alembic_version"}  # the server's schema version stays its own
FILLED_TABLES = ("runs", "registered_models", "logged_models")  # a target with any of these is not overwritten


class MigrationError(RuntimeError):
    pass


def migrate_store(store: Path, target_url: str, server_url: str, client_env: dict[str, str]) -> dict[str, int]:
    """Copy `store`'s mlflow.db rows and mlartifacts/ files into the server; the number of rows copied per table."""
    source_url = f"sqlite:///{(store / 'mlflow.db').resolve()}"
    upgrade = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", source_url], capture_output=True)
    if upgrade.returncode != 0:
        raise MigrationError(f"`mlflow db upgrade` of {source_url} failed: {upgrade.stderr.decode()[-1000:]}")
    source, target = sa.create_engine(source_url), sa.create_engine(target_url)
    try:
        counts = _copy_rows(source, target, _local_artifact_prefix(store))
    finally:
        source.dispose()
        target.dispose()
    _upload_artifacts(store / "mlartifacts", server_url, client_env)
    return counts


def _local_artifact_prefix(store: Path) -> str:
    return (store / "mlartifacts").resolve().as_uri()


def _copy_rows(source: sa.Engine, target: sa.Engine, local_prefix: str) -> dict[str, int]:
    source_tables, target_tables = sa.MetaData(), sa.MetaData()
    source_tables.reflect(source)
    target_tables.reflect(target)
    with target.begin() as out:
        for name in FILLED_TABLES:
            if (
                name in target_tables.tables
                and out.execute(sa.select(sa.func.count()).select_from(target_tables.tables[name])).scalar()
            ):
                raise MigrationError(f"the stack's MLflow already holds {name}; migrate into an empty one")
        ordered = [t for t in target_tables.sorted_tables if t.name not in SKIPPED_TABLES]
        for table in reversed(ordered):  # the server's own defaults (the Default experiment, ...) give way
            out.execute(table.delete())
        counts = {}
        with source.connect() as src:
            for table in ordered:
                if table.name not in source_tables.tables:
                    continue
                rows = [dict(r._mapping) for r in src.execute(sa.select(source_tables.tables[table.name]))]
                columns = {c.name for c in table.columns if c.computed is None}  # PostgreSQL computes the rest
                rows = [{k: _rewritten(v, local_prefix) for k, v in row.items() if k in columns} for row in rows]
                if rows:
                    out.execute(table.insert(), rows)
                counts[table.name] = len(rows)
        _advance_sequences(out, ordered)
    return {name: n for name, n in counts.items() if n and name in ("experiments", "runs", "metrics", "model_versions")}


def _rewritten(value, local_prefix: str):
    if isinstance(value, str) and value.startswith(local_prefix):
        return "mlflow-artifacts:" + value[len(local_prefix) :]
    return value


def _advance_sequences(connection, tables) -> None:
    """Ids were copied as they were; PostgreSQL's sequences must start past them."""
    for table in tables:
        for column in table.primary_key.columns:
            sequence = connection.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            ).scalar()
            if sequence:
                highest = connection.execute(sa.select(sa.func.max(column))).scalar()
                if highest is not None:
                    connection.execute(sa.text("SELECT setval(:s, :v)"), {"s": sequence, "v": highest})


def _upload_artifacts(local_root: Path, server_url: str, client_env: dict[str, str]) -> None:
    """Each experiment's artifact directory, uploaded through the server's proxy (mlflow-artifacts:/<name>)."""
    if not local_root.is_dir():
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with client_environment(client_env), _use_tracking_uri(server_url):  # the proxy's credentials
        for directory in sorted(p for p in local_root.iterdir() if p.is_dir()):
            get_artifact_repository(f"mlflow-artifacts:/{directory.name}").log_artifacts(str(directory))

"""Lineage in MLflow: the runs of a bootstrap and what they log (judge_checks.py logs `ratchet judge-check` runs
with the helpers here).

One experiment per config name, a parent run per bootstrap and a child run per round, each opened by a context
manager that ends it FINISHED, FAILED (an exception) or KILLED (a signal or Ctrl-C), and found again by tags on a
resume. The MLflow client is used explicitly (not the thread-local active run): Prefect may run us in threads.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from registry import sqlite_store

BOOTSTRAP_TAG = "ratchet.bootstrap_id"
ROUND_TAG = "ratchet.round"
CHAMPION_TAG = "ratchet.champion"  # the key of the policy a round started from
SUPERSEDED_TAG = "ratchet.superseded"  # a round run whose champion a re-decided earlier round replaced


def tracking_server() -> str | None:
    """The MLflow tracking server that MLFLOW_TRACKING_URI names (http or https), if any: it then takes the place of
    the store directory (`ratchet stack up` writes the variable into .stack/env)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri if uri.startswith(("http://", "https://")) else None


def tracking_uri_for(directory: str | Path) -> str:
    """The tracking server if one is configured; else an absolute sqlite URI in `directory`, so a worker in another
    directory does not start a second store."""
    return tracking_server() or f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


def artifact_root_for(directory: str | Path) -> str | None:
    """Where new experiments keep artifacts: `directory`/mlartifacts beside mlflow.db; None on a tracking server,
    whose artifact proxy (mlflow-artifacts:/) holds them, so no worker needs the server's disk."""
    return None if tracking_server() else str(Path(directory).resolve() / "mlartifacts")


def model_name_for(experiment: str) -> str:
    """The registered model that holds an experiment's adapters."""
    return f"ratchet-{experiment}"


def client_for(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        sqlite_store.initialise(tracking_uri)
    return MlflowClient(tracking_uri)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # Explicit artifact location: with sqlite, MLflow would otherwise put artifacts under ./mlruns of the cwd.
    location = (Path(artifact_root).resolve() / name).as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # another bootstrap of the same experiment created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _find_runs(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment_id], filter_string=query)


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


@dataclass(frozen=True)
class BootstrapRun:
    """Where a bootstrap's lineage goes: small enough to pass to every round."""

    uri: str
    experiment_id: str
    run_id: str
    bootstrap_id: str
    model_name: str


@dataclass(frozen=True)
class RoundRun:
    run_id: str
    logged: bool  # the round finished before: its metrics, tables and adapter are in MLflow already
    decision: dict | None  # the decision it logged then (decision.json)


def _mark_superseded(client: MlflowClient, model_name: str, run_id: str, superseded: bool) -> None:
    """Tag a round run, and the adapter version it registered, as superseded (or no longer)."""
    client.set_tag(run_id, SUPERSEDED_TAG, str(superseded).lower())
    for version in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"):
        client.set_model_version_tag(model_name, version.version, SUPERSEDED_TAG, str(superseded).lower())


@contextmanager
def _status(client: MlflowClient, run_id: str) -> Iterator[None]:
    """End the run FINISHED, FAILED on an exception, or KILLED on a signal or Ctrl-C (then re-raise)."""
    try:
        yield
    except Exception:
        finish(client, run_id, "FAILED")
        raise
    except BaseException:
        finish(client, run_id, "KILLED")
        raise
    finish(client, run_id, "FINISHED")


@contextmanager
def bootstrap_run(
    tracking_uri: str, artifact_root: str | None, experiment: str, bootstrap_id: str, params: dict, prefect_run: str
) -> Iterator[BootstrapRun]:
    """The parent run of a bootstrap: found by tag on a resume, created with `params` otherwise."""
    client = client_for(tracking_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_root)
    found = _find_runs(client, experiment_id, {BOOTSTRAP_TAG: bootstrap_id, "ratchet.kind": "bootstrap"})
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {BOOTSTRAP_TAG: bootstrap_id, "ratchet.kind": "bootstrap", "prefect.flow_run_id": prefect_run}
        run_id = client.create_run(experiment_id, run_name=bootstrap_id, tags=tags).info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in flatten(params).items()])
    with _status(client, run_id):
        yield BootstrapRun(tracking_uri, experiment_id, run_id, bootstrap_id, model_name_for(experiment))


@contextmanager
def round_run(bootstrap: BootstrapRun, k: int, champion_key: str, prefect_run: str) -> Iterator[RoundRun]:
    """The child run of round k from the champion `champion_key`; a run of round k from another champion (before a
    re-decided earlier round) is tagged superseded, and taken back if that champion returns."""
    client = client_for(bootstrap.uri)
    tags = {BOOTSTRAP_TAG: bootstrap.bootstrap_id, ROUND_TAG: str(k)}
    mine = None
    for run in _find_runs(client, bootstrap.experiment_id, tags):
        is_mine = run.data.tags.get(CHAMPION_TAG) == champion_key
        _mark_superseded(client, bootstrap.model_name, run.info.run_id, not is_mine)
        mine = run if is_mine else mine
    if mine is None:
        tags |= {"mlflow.parentRunId": bootstrap.run_id, "ratchet.kind": "round", CHAMPION_TAG: champion_key}
        run_id = client.create_run(bootstrap.experiment_id, run_name=f"round-{k}", tags=tags).info.run_id
        found = RoundRun(run_id, logged=False, decision=None)
    else:
        logged = mine.info.status == "FINISHED"
        decision = mlflow.artifacts.load_dict(f"runs:/{mine.info.run_id}/decision.json") if logged else None
        found = RoundRun(mine.info.run_id, logged, decision)
        client.update_run(found.run_id, status="RUNNING")
    client.set_tag(found.run_id, "prefect.flow_run_id", prefect_run)  # the newest Prefect run of this round
    with _status(client, found.run_id):
        yield found


def metric_entities(metrics: dict[str, float], step: int) -> list[mlflow.entities.Metric]:
    """Unmeasured (NaN or None) metrics are left out, so a chart shows a gap rather than a broken point."""
    finite = {name: float(v) for name, v in metrics.items() if v is not None and math.isfinite(float(v))}
    return [mlflow.entities.Metric(name, value, 0, step) for name, value in finite.items()]


def log_round(bootstrap: BootstrapRun, run: RoundRun, k: int, metrics: dict[str, float], round_dir: Path) -> None:
    """Metrics at step=k on the round and on the parent (drift-over-rounds charts), stage tables as artifacts."""
    client = client_for(bootstrap.uri)
    for run_id in (run.run_id, bootstrap.run_id):
        client.log_batch(run_id, metrics=metric_entities(metrics, step=k))
    curves = training_curves(round_dir / "adapter" / "train_metrics.json")
    for start in range(0, len(curves), 1000):  # MLflow's most metrics in one batch
        client.log_batch(run.run_id, metrics=curves[start : start + 1000])
    for stage in ("generations", "pairs", "eval"):
        if (round_dir / stage).exists():
            _log_dataset(client, run.run_id, round_dir / stage, stage)


def training_curves(record: Path) -> list[mlflow.entities.Metric]:
    """The trainer's loss and signals at each optimiser step (`train/step_loss`, ...), on the round's run only:
    their steps are the trainer's, not rounds."""
    curves = json.loads(record.read_text()).get("curves", {}) if record.exists() else {}
    named = [({f"train/step_{name}": value}, int(step)) for name, points in curves.items() for step, value in points]
    return [metric for values, step in named for metric in metric_entities(values, step)]


def log_decision(bootstrap: BootstrapRun, run: RoundRun, k: int, decision: dict) -> None:
    """The gate's decision as the round's tag and decision.json, and as a 0/1 `gate/promoted` metric over rounds."""
    client = client_for(bootstrap.uri)
    client.set_tag(run.run_id, "ratchet.decision", decision["reason"][:5000])
    with storing(f"round {k}'s decision"):
        client.log_dict(run.run_id, decision, "decision.json")
    for run_id in (run.run_id, bootstrap.run_id):
        client.log_batch(run_id, metrics=metric_entities({"gate/promoted": float(decision["promote"])}, step=k))


def tag(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = client_for(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def log_evaluation(
    tracking_uri: str, experiment_id: str, name: str, metrics: dict, decision: dict, eval_dir: Path, prefect_run: str
) -> str:
    """A standalone comparison of two checkpoints as its own finished run, with the eval rows as its input."""
    client = client_for(tracking_uri)
    tags = {"ratchet.kind": "evaluation", "prefect.flow_run_id": prefect_run, "ratchet.decision": decision["reason"]}
    run_id = client.create_run(experiment_id, run_name=f"evaluate {name}", tags=tags).info.run_id
    client.log_batch(run_id, metrics=metric_entities(metrics, step=0))
    client.log_dict(run_id, decision, "decision.json")
    _log_dataset(client, run_id, eval_dir, "eval")
    finish(client, run_id, "FINISHED")
    return run_id


def log_export(tracking_uri: str, experiment_id: str, version: str, exported: dict[str, dict[str, str]]) -> str:
    """An export of a registered version as its own finished run: the version it came from, and each form's path
    and digest."""
    client = client_for(tracking_uri)
    tags = {"ratchet.kind": "export", "ratchet.version": version}
    run_id = client.create_run(experiment_id, run_name=f"export v{version}", tags=tags).info.run_id
    params = {"version": version} | {
        f"{form}.{key}": value for form, found in exported.items() for key, value in found.items()
    }
    client.log_batch(run_id, params=[mlflow.entities.Param(key, value) for key, value in params.items()])
    finish(client, run_id, "FINISHED")
    return run_id


def log_prompts(tracking_uri: str, run_id: str, files: dict[str, str]) -> None:
    """The prompt files (jsonl or parquet) a bootstrap draws from, as inputs of its run."""
    client = client_for(tracking_uri)
    for name, path in files.items():
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True, dtype=False)
        log_frame(client, run_id, frame, str(Path(path).resolve()), name)


def _log_dataset(client: MlflowClient, run_id: str, stage_dir: Path, name: str) -> None:
    """The stage's rows as a parquet table artifact and as a run input with a digest."""
    from datasets import load_from_disk

    log_frame(client, run_id, load_from_disk(str(stage_dir)).to_pandas(), str(stage_dir), name)


@contextmanager
def storing(what: str) -> Iterator[None]:
    """Turn a failed upload to MLflow's artifact store into one clear error naming what was being stored."""
    try:
        yield
    except MlflowException as err:
        raise MlflowException(
            f"{what} could not be stored in MLflow's artifact store; a full disk or a stopped artifact server is "
            f"the usual cause (see the tracking server's log). MLflow said: {err.message}"
        ) from err


def log_frame(client: MlflowClient, run_id: str, frame: pd.DataFrame, source: str | None, name: str) -> None:
    """A table artifact (tables/<name>.parquet) and a dataset input whose digest pins the exact rows."""
    with tempfile.TemporaryDirectory() as tmp, storing(f"the {name} table of run {run_id}"):
        path = Path(tmp) / f"{name}.parquet"
        frame.to_parquet(path)
        client.log_artifact(run_id, str(path), "tables")
    with warnings.catch_warnings():
        # A local path matches two equivalent source types, and the schema hint is about model serving: noise here.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)._to_mlflow_entity()
    client.log_inputs(run_id, datasets=[mlflow.entities.DatasetInput(dataset)])


def log_files(tracking_uri: str, run_id: str, directory: Path, artifact_path: str) -> None:
    with storing(f"the {artifact_path} of run {run_id}"):
        client_for(tracking_uri).log_artifacts(run_id, str(directory), artifact_path)


def finish(client: MlflowClient, run_id: str, status: str) -> None:
    client.set_terminated(run_id, RunStatus.to_string(getattr(RunStatus, status)))

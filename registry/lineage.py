"""Lineage in MLflow: the only module that imports mlflow.

One experiment per config name, a parent run per bootstrap, a child run per round. Runs are found again by tags,
so a resumed bootstrap reuses its runs instead of duplicating them. The MLflow client is used explicitly (not the
thread-local active run), because Prefect may run us in worker threads.
"""

from __future__ import annotations

import fcntl
import functools
import getpass
import json
import math
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

BOOTSTRAP_TAG = "ratchet.bootstrap_id"
ROUND_TAG = "ratchet.round"
PROMOTED_TAG = "ratchet.was_champion"


def tracking_uri_for(directory: str | Path) -> str:
    """An absolute sqlite URI, so a worker in another directory does not start a second store."""
    return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


def client_for(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        _initialise_sqlite_store(tracking_uri)
    return MlflowClient(tracking_uri)


@functools.cache
def _initialise_sqlite_store(tracking_uri: str) -> None:
    """The first client on a new store creates and migrates its schema; two bootstraps starting at once would both
    migrate it, and one fails. A lock beside the database makes the first one do it alone (once per process)."""
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        MlflowClient(tracking_uri).search_registered_models(max_results=1)  # the registry initialises on first use


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | Path) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # Explicit artifact location: with sqlite, MLflow would otherwise put artifacts under ./mlruns of the cwd.
    try:
        return client.create_experiment(name, artifact_location=(Path(artifact_root).resolve() / name).as_uri())
    except MlflowException:  # another bootstrap of the same experiment created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def open_bootstrap(client: MlflowClient, experiment_id: str, bootstrap_id: str, config: dict, prefect_run: str) -> str:
    """The parent run for this bootstrap: found by tag on a resume, created (with the config as params) otherwise."""
    run_id = _find_run(client, experiment_id, {BOOTSTRAP_TAG: bootstrap_id, "ratchet.kind": "bootstrap"})
    if run_id is None:
        tags = {BOOTSTRAP_TAG: bootstrap_id, "ratchet.kind": "bootstrap", "prefect.flow_run_id": prefect_run}
        run_id = client.create_run(experiment_id, run_name=bootstrap_id, tags=tags).info.run_id
        params = [mlflow.entities.Param(k, v[:6000]) for k, v in flatten(config).items()]
        client.log_batch(run_id, params=params)
    else:
        client.update_run(run_id, status="RUNNING")
    return run_id


def open_round(
    client: MlflowClient, experiment_id: str, parent_run_id: str, bootstrap_id: str, k: int, prefect_run: str = ""
) -> tuple[str, bool]:
    """The child run for round k, and whether it already finished (so its logging is not repeated).

    `prefect_run` is the Prefect flow-run id of the round; a resumed round records the newest one.
    """
    tags = {BOOTSTRAP_TAG: bootstrap_id, ROUND_TAG: str(k)}
    run_id = _find_run(client, experiment_id, tags)
    if run_id is not None:
        finished = client.get_run(run_id).info.status == "FINISHED"
        if not finished:
            client.update_run(run_id, status="RUNNING")  # resumed after a crash or a failure
        return run_id, finished
    tags |= {"mlflow.parentRunId": parent_run_id, "ratchet.kind": "round", "prefect.flow_run_id": prefect_run}
    return client.create_run(experiment_id, run_name=f"round-{k}", tags=tags).info.run_id, False


def _metrics(metrics: dict[str, float], step: int) -> list[mlflow.entities.Metric]:
    """Unmeasured (NaN or None) metrics are left out, so a chart shows a gap rather than a broken point."""
    finite = {name: float(v) for name, v in metrics.items() if v is not None and math.isfinite(float(v))}
    return [mlflow.entities.Metric(name, value, 0, step) for name, value in finite.items()]


def log_round(
    client: MlflowClient,
    parent_run_id: str,
    round_run_id: str,
    k: int,
    metrics: dict[str, float],
    round_dir: Path,
    decision: dict,
) -> None:
    """Metrics at step=k on the round and on the parent (drift-over-rounds charts), tables and decision as artifacts.

    The round run stays RUNNING until `finish`, so a crash before the adapter is registered is redone on resume.
    """
    for run_id in (round_run_id, parent_run_id):
        client.log_batch(run_id, metrics=_metrics(metrics, step=k))
    client.set_tag(round_run_id, "ratchet.decision", decision["reason"][:5000])
    client.log_dict(round_run_id, decision, "decision.json")
    if (round_dir / "generations").exists():
        from components.data import generation_backend  # imports `datasets`, which the CLI's quick commands skip

        client.set_tag(round_run_id, "ratchet.generation_backend", generation_backend(round_dir / "generations"))
    for stage in ("generations", "pairs", "eval"):
        stage_dir = round_dir / stage
        if stage_dir.exists():
            _log_dataset(client, round_run_id, stage_dir, stage)


def log_evaluation(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    metrics: dict[str, float],
    decision: dict,
    eval_dir: Path,
    prefect_run: str,
) -> str:
    """A standalone comparison of two checkpoints as its own finished run, with the eval rows as its input."""
    tags = {"ratchet.kind": "evaluation", "prefect.flow_run_id": prefect_run, "ratchet.decision": decision["reason"]}
    run_id = client.create_run(experiment_id, run_name=f"evaluate {name}", tags=tags).info.run_id
    client.log_batch(run_id, metrics=_metrics(metrics, step=0))
    client.log_dict(run_id, decision, "decision.json")
    _log_dataset(client, run_id, eval_dir, "eval")
    finish(client, run_id, ok=True)
    return run_id


def log_prompts(client: MlflowClient, run_id: str, files: dict[str, str]) -> None:
    """The prompt files (jsonl or parquet) a bootstrap draws from, as inputs of its run."""
    for name, path in files.items():
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True, dtype=False)
        _log_frame(client, run_id, frame, str(Path(path).resolve()), name)


def _log_dataset(client: MlflowClient, run_id: str, stage_dir: Path, name: str) -> None:
    """The stage's rows as a parquet table artifact and as a run input with a digest."""
    from datasets import load_from_disk

    _log_frame(client, run_id, load_from_disk(str(stage_dir)).to_pandas(), str(stage_dir), name)


def _log_frame(client: MlflowClient, run_id: str, frame: pd.DataFrame, source: str, name: str) -> None:
    """A table artifact (tables/<name>.parquet) and a dataset input whose digest pins the exact rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.parquet"
        frame.to_parquet(path)
        client.log_artifact(run_id, str(path), "tables")
    with warnings.catch_warnings():
        # A local path matches two equivalent source types, and the schema hint is about model serving: noise here.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)._to_mlflow_entity()
    client.log_inputs(run_id, datasets=[mlflow.entities.DatasetInput(dataset)])


def register_adapter(client: MlflowClient, model_name: str, round_run_id: str, adapter_dir: Path, lineage: dict) -> str:
    """Log the adapter as an MLflow model of the round run and register it as a version (idempotent per round run).

    The version's tags carry the base model and the full adapter chain, so any version can be loaded again.
    """
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="Ratchet LoRA adapters, one version per round.")
    for version in client.search_model_versions(f"name = '{model_name}' and run_id = '{round_run_id}'"):
        return str(version.version)
    tags = {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in lineage.items()}
    run = client.get_run(round_run_id)
    model = client.create_logged_model(
        run.info.experiment_id, name="adapter", source_run_id=round_run_id, tags=tags, model_type="peft-lora-adapter"
    )
    client.log_model_artifacts(model.model_id, str(adapter_dir))
    client.finalize_logged_model(model.model_id, "READY")
    version = client.create_model_version(
        model_name, model.model_uri, run_id=round_run_id, tags=tags, model_id=model.model_id
    )
    return str(version.version)


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(model_name, alias, version)
    if alias == "champion":
        # Every version that was ever champion stays marked, so a rollback knows where to go back to.
        client.set_model_version_tag(model_name, version, PROMOTED_TAG, "true")


def model_name_for(experiment: str) -> str:
    return f"ratchet-{experiment}"


def _model_version(client: MlflowClient, model_name: str, ref: str):
    """The model version a version number or an alias (such as `champion`) names; MlflowException if unknown."""
    if ref.isdigit():
        return client.get_model_version(model_name, ref)
    return client.get_model_version_by_alias(model_name, ref)


def resolve_version(client: MlflowClient, model_name: str, ref: str) -> str:
    """A version number, or an alias such as `champion`, to a version number; MlflowException if unknown."""
    return str(_model_version(client, model_name, ref).version)


def checkpoint(client: MlflowClient, model_name: str, ref: str) -> dict:
    """What a registered version is: its base model and adapter chain (as recorded at registration) and round."""
    version = _model_version(client, model_name, ref)
    return {
        "version": str(version.version),
        "base": version.tags["base"],
        "adapters": json.loads(version.tags["adapter_chain"]),
        "round": version.tags.get("round"),
        "run_id": version.run_id,
    }


def current_champion(client: MlflowClient, model_name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, "champion").version)
    except MlflowException:
        return None


def move_champion(client: MlflowClient, experiment: str, version: str | None, action: str, reason: str) -> str:
    """Point `champion` at `version` (None: back to the base model) by hand, recorded as a run in the experiment.

    Returns the recording run's id. The run carries who, from, to and why, so the UI lists every manual move.
    """
    model_name = model_name_for(experiment)
    before = current_champion(client, model_name)
    if version is None:
        client.delete_registered_model_alias(model_name, "champion")
    else:
        set_alias(client, model_name, "champion", version)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    tags = {"ratchet.kind": "alias-move", "ratchet.action": action, "mlflow.user": getpass.getuser()}
    run = client.create_run(experiment_id, run_name=f"{action} {before or 'base'} -> {version or 'base'}", tags=tags)
    params = {"from_version": before or "base", "to_version": version or "base", "reason": reason or "-"}
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
    finish(client, run.info.run_id, ok=True)
    return run.info.run_id


def previous_champion(client: MlflowClient, model_name: str) -> str | None:
    """The newest version below the current champion that was champion once; None means the base model."""
    current = current_champion(client, model_name)
    if current is None:
        raise ValueError(f"{model_name} has no champion to roll back from")
    earlier = [
        int(v.version)
        for v in client.search_model_versions(f"name = '{model_name}'")
        if v.tags.get(PROMOTED_TAG) == "true" and int(v.version) < int(current)
    ]
    return str(max(earlier)) if earlier else None


def round_table(client: MlflowClient, experiment: str, bootstrap_id: str | None = None) -> tuple[str, list[dict]]:
    """The newest (or the named) bootstrap of an experiment, and one row per round: its metrics and gate decision."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment named '{experiment}'")
    query = "tags.`ratchet.kind` = 'bootstrap'"
    if bootstrap_id:
        query += f" and tags.`{BOOTSTRAP_TAG}` = '{bootstrap_id}'"
    parents = client.search_runs([found.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise ValueError(f"experiment '{experiment}' has no bootstrap run{f' {bootstrap_id}' if bootstrap_id else ''}")
    parent = parents[0]
    children = client.search_runs([found.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    rows = [
        {"round": int(c.data.tags[ROUND_TAG]), "decision": c.data.tags.get("ratchet.decision", "-")} | c.data.metrics
        for c in children
    ]
    return parent.data.tags[BOOTSTRAP_TAG], sorted(rows, key=lambda r: r["round"])


def finish(client: MlflowClient, run_id: str, ok: bool) -> None:
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


def log_report(client: MlflowClient, run_id: str, report_dir: Path) -> None:
    client.log_artifacts(run_id, str(report_dir), "report")


def run_url(experiment_id: str, run_id: str, port: int = 5000) -> str:
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}"


def comparison_url(experiment_id: str, port: int = 5000) -> str:
    """The runs chart view (metrics over rounds), not the GenAI landing page the UI opens by default."""
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?compareRunsMode=CHART"

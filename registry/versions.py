"""Registered adapter versions and the `champion` / `challenger` aliases (registry stages are deprecated).

Each trained adapter is an MLflow logged model of its round run, registered as a version of `ratchet-<experiment>`.
The version's tags carry the base model, the adapter chain (as MLflow model URIs, `adapter_uris`, and as the paths
it was trained from, `adapter_chain`) and the round, so any machine that reaches the tracking server can load any
version again (`download_adapters`).
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.data import write_atomically
from registry.lineage import SUPERSEDED_TAG, client_for, finish, model_name_for, storing

PROMOTED_TAG = "ratchet.was_champion"


def register_adapter(
    tracking_uri: str, model_name: str, round_run_id: str, adapter_dir: Path, tags: dict, parent: str | None = None
) -> str:
    """Log the adapter as an MLflow model of the round run and register it as a version (idempotent per round run).
    `parent` is the version it was trained on top of (None: the base model); its chain and this adapter's model URI
    make the version's `adapter_uris`."""
    client = client_for(tracking_uri)
    if found := _registered(client, model_name, round_run_id, "Ratchet LoRA adapters, one version per round."):
        return found
    tags = _as_tags(tags)
    model = _log_model(client, round_run_id, adapter_dir, tags, "adapter", "peft-lora-adapter")
    if (chain := _adapter_uris(client, model_name, parent)) is not None:
        tags["adapter_uris"] = json.dumps([*chain, model.model_uri])
    return _new_version(client, model_name, round_run_id, model, tags)


def register_reward_model(tracking_uri: str, model_name: str, round_run_id: str, directory: Path, tags: dict) -> str:
    """Log a round's reward model (its LoRA and scoring head) as an MLflow model of the round run and register it
    as a version of `model_name` (idempotent per round run); `tags` carry its lineage."""
    client = client_for(tracking_uri)
    description = "Ratchet reward models, one version per round: a LoRA and a scalar head fitted to judged pairs."
    if found := _registered(client, model_name, round_run_id, description):
        return found
    tags = _as_tags(tags)
    model = _log_model(client, round_run_id, directory, tags, "reward_model", "peft-lora-reward-model")
    return _new_version(client, model_name, round_run_id, model, tags)


def register_merged(tracking_uri: str, model_name: str, export_run_id: str, merged: Path, tags: dict) -> str:
    """A merged checkpoint as an MLflow transformers model of its export run, registered as a version of
    `<model_name>-merged` (`tags`: the adapter version it came from, its digest), so that `mlflow models serve -m
    models:/<model_name>-merged/<N>` serves it."""
    import mlflow.transformers
    import torch
    import transformers

    client = client_for(tracking_uri)  # also the global tracking URI, which the fluent API below follows
    libraries = [
        f"mlflow=={mlflow.__version__}",
        f"transformers=={transformers.__version__}",
        f"torch=={torch.__version__}",
    ]
    where = f"the merged checkpoint of export run {export_run_id}"
    with mlflow.start_run(run_id=export_run_id), storing(where), _quiet("mlflow"):
        logged = mlflow.transformers.log_model(
            str(merged),
            name="merged",
            task="text-generation",
            pip_requirements=libraries,  # named, not inferred: inference loads the model in a subprocess
        )
    name = f"{model_name}-merged"
    _registered(client, name, export_run_id, "Ratchet champions with their adapters merged, one version per export.")
    version = client.create_model_version(
        name, logged.model_uri, run_id=export_run_id, tags=_as_tags(tags), model_id=logged.model_id
    )
    return str(version.version)


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """A library's warnings that a user cannot act on (the transformers flavour looks for a model card and a licence
    on the Hub for a local directory) and its registration chatter, kept off the terminal."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _registered(client: MlflowClient, model_name: str, round_run_id: str, description: str) -> str | None:
    """The version the round run already registered, if any (creating the registered model on first use)."""
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description=description)
    for version in client.search_model_versions(f"name = '{model_name}' and run_id = '{round_run_id}'"):
        return str(version.version)
    return None


def _as_tags(tags: dict) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in tags.items()}


def _log_model(client: MlflowClient, round_run_id: str, directory: Path, tags: dict, name: str, model_type: str):
    """`directory` as a READY logged model of the round run (FAILED, and the error raised, if its upload fails)."""
    run = client.get_run(round_run_id)
    model = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=round_run_id, tags=tags, model_type=model_type
    )
    try:
        with storing(f"the {name} of round run {round_run_id} ({model.artifact_location}; no version registered)"):
            client.log_model_artifacts(model.model_id, str(directory))
    except MlflowException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    return model


def _new_version(client: MlflowClient, model_name: str, round_run_id: str, model, tags: dict) -> str:
    version = client.create_model_version(
        model_name, model.model_uri, run_id=round_run_id, tags=tags, model_id=model.model_id
    )
    return str(version.version)


def _adapter_uris(client: MlflowClient, model_name: str, version: str | None) -> list[str] | None:
    """A version's adapter chain as MLflow model URIs; [] for the base model, None for a version registered before
    versions recorded them."""
    if version is None:
        return []
    found = client.get_model_version(model_name, version).tags.get("adapter_uris")
    return json.loads(found) if found else None


def download_adapters(tracking_uri: str, uris: list[str], into: Path) -> list[str]:
    """Each adapter of a chain from MLflow's artifact store into `into/<model id>` (once: a finished download is
    reused); their local directories, in chain order."""
    client_for(tracking_uri)  # sets the tracking URI the download resolves `models:/` against
    local = []
    for uri in uris:
        target = into / uri.removeprefix("models:/").replace("/", "-")
        if not target.exists():
            with write_atomically(target) as tmp:
                mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
        local.append(str(target))
    return local


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(model_name, alias, version)
    if alias == "champion":
        # Every version that was ever champion stays marked, so a rollback knows where to go back to.
        client.set_model_version_tag(model_name, version, PROMOTED_TAG, "true")


def point_alias(tracking_uri: str, model_name: str, alias: str, version: str | None) -> None:
    """`alias` to `version`, or off the registered model when `version` is None (the base model again)."""
    client = client_for(tracking_uri)
    if version is not None:
        set_alias(client, model_name, alias, version)
        return
    try:
        client.delete_registered_model_alias(model_name, alias)
    except MlflowException:
        pass  # it pointed nowhere already


def _model_version(client: MlflowClient, model_name: str, ref: str):
    """The model version a version number or an alias (such as `champion`) names; MlflowException if unknown."""
    if ref.isdigit():
        return client.get_model_version(model_name, ref)
    return client.get_model_version_by_alias(model_name, ref)


def resolve_version(client: MlflowClient, model_name: str, ref: str) -> str:
    """A version number, or an alias such as `champion`, to a version number; MlflowException if unknown."""
    return str(_model_version(client, model_name, ref).version)


def checkpoint(client: MlflowClient, model_name: str, ref: str) -> dict:
    """What a registered version is: its base model, its adapter chain (paths and, where recorded, MLflow model
    URIs) and its round."""
    version = _model_version(client, model_name, ref)
    if version.tags.get(SUPERSEDED_TAG) == "true" and "adapter_uris" not in version.tags:
        raise MlflowException(
            f"version {version.version} was superseded when its bootstrap re-decided an earlier round; its adapter "
            f"directory now holds another round's (the original is in MLflow: {version.source})"
        )
    uris = version.tags.get("adapter_uris")
    return {
        "version": str(version.version),
        "base": version.tags["base"],
        "adapters": json.loads(version.tags["adapter_chain"]),
        "adapter_uris": json.loads(uris) if uris else None,
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
    finish(client, run.info.run_id, "FINISHED")
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

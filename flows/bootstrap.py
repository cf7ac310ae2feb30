"""The bootstrap: N rounds of generate -> judge -> train -> evaluate -> gate, with MLflow lineage.

The bootstrap id is the config name plus a digest of the resolved config, so running the same config again resumes
the same bootstrap (finished stages are skipped) instead of starting a second one.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from prefect import flow, get_client, get_run_logger, tags
from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run
from pydantic import Field

from components.config import ExperimentConfig, load_config, run_overrides
from components.models import Policy
from flows.round import artifact_key, bootstrap_round
from registry import lineage


def bootstrap_id(cfg: ExperimentConfig) -> str:
    return f"{cfg.name}-{cfg.digest()}"


def _flow_run_name() -> str:
    """bootstrap-<experiment name>-<date>; the file's stem if the config cannot be read (the run then fails)."""
    path = Path(flow_run.parameters["config"])
    try:
        name = yaml.safe_load(path.read_text()).get("name", path.stem)
    except (OSError, yaml.YAMLError, AttributeError):
        name = path.stem
    return f"bootstrap-{name}-{date.today().isoformat()}"


@flow(name="bootstrap", flow_run_name=_flow_run_name)
def bootstrap(
    config: Annotated[
        str, Field(description="Experiment YAML, relative to the project directory.")
    ] = "configs/smoke.yaml",
    rounds: Annotated[int | None, Field(gt=0, description="Override the config's number of rounds.")] = None,
    store: Annotated[str, Field(description="Directory holding mlflow.db and mlartifacts/.")] = ".",
    overrides: Annotated[
        dict[str, Any] | None,
        Field(description='Config values by dotted path, e.g. {"training.learning_rate": 0.0001, "seed": 1}.'),
    ] = None,
) -> dict:
    """Run the config's rounds from its base policy; return the per-round results and where they are."""
    cfg = load_config(config, run_overrides(rounds, overrides))
    return run_rounds(cfg, lineage.tracking_uri_for(store), str(Path(store).resolve() / "mlartifacts"))


def _tag_this_flow_run(*names: str) -> None:
    """Tags on the bootstrap's own flow run (deployments add theirs; `ratchet run` has none)."""
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=sorted(set(current) | set(names)))


def run_rounds(cfg: ExperimentConfig, tracking_uri: str, artifact_root: str) -> dict:
    """The round loop: promote or keep the champion after each round, stop early when the gate says so."""
    log = get_run_logger()
    run_name = bootstrap_id(cfg)
    out = Path(cfg.workdir).resolve() / run_name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    client = lineage.client_for(tracking_uri)
    experiment_id = lineage.ensure_experiment(client, cfg.name, artifact_root)
    parent = lineage.open_bootstrap(client, experiment_id, run_name, cfg.model_dump(mode="json"), str(flow_run.id))
    lineage.log_prompts(
        client, parent, {"train_prompts": cfg.data.train_prompts, "eval_prompts": cfg.data.eval_prompts}
    )
    tracking = {"uri": tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent, "bootstrap_id": run_name}
    _tag_this_flow_run("ratchet", cfg.name)
    create_link_artifact(
        lineage.comparison_url(experiment_id),
        link_text=f"MLflow: {cfg.name} runs over rounds",
        key=f"{artifact_key(run_name)}-mlflow",
        description=f"MLflow parent run {parent} (start `mlflow ui --backend-store-uri {tracking_uri}`)",
    )
    model_name = lineage.model_name_for(cfg.name)

    champion, results, ok = Policy(cfg.models.policy), [], False
    try:
        for k in range(1, cfg.rounds + 1):
            history = [{"k": r["k"], "metrics": r["metrics"]} for r in results]
            with tags(cfg.name):
                result = bootstrap_round(cfg, k, str(out / f"round-{k}"), champion, tracking, model_name, history)
            results.append(result)
            champion = result["champion"]
            if not result["promote"] and cfg.gate.on_block == "stop":
                log.warning("round %d blocked and gate.on_block is 'stop': ending the bootstrap", k)
                break
        ok = True
    finally:
        lineage.finish(client, parent, ok)
    return {
        "bootstrap_id": run_name,
        "experiment": cfg.name,
        "workdir": str(out),
        "experiment_id": experiment_id,
        "parent_run_id": parent,
        "model_name": model_name,
        "champion": {"base": champion.base, "adapters": list(champion.adapters)},
        "rounds": [{k: r[k] for k in ("k", "promote", "decision", "metrics")} for r in results],
    }

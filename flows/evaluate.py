"""Compare any two registered checkpoints on the held-out cohorts, outside a bootstrap.

A checkpoint is a version number or an alias (`champion`, `challenger`) of the experiment's registered model, or
`base` for the config's round-0 policy. The result is an MLflow run (tagged `ratchet.kind = evaluation`) with the
same metrics a round logs, what the gate would decide, and a Prefect report artifact.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from components import report
from components.config.experiment import ExperimentConfig
from components.models import Policy
from components.requests import evaluate_request, gate_request
from components.validate import validate
from flows.forms import STORE_HELP, described, load_form_config
from flows.reporting import artifact_key, publish
from flows.round import evaluate, memo_dir
from registry import lineage, versions
from registry.links import run_url
from registry.promotion import decide


def resolve(cfg: ExperimentConfig, tracking_uri: str, ref: str) -> tuple[str, Policy]:
    """A checkpoint reference to a label and the policy it stands for; its adapters come from MLflow's artifact
    store (into the workdir's `registry/`), so any machine that reaches the tracking server can evaluate it."""
    if ref == "base":
        return "base", Policy(cfg.models.policy)
    found = versions.checkpoint(lineage.client_for(tracking_uri), versions.model_name_for(cfg.name), ref)
    label = f"v{found['version']}"
    if found["adapter_uris"] is not None:
        cache = Path(cfg.workdir).resolve() / "registry"
        return label, Policy(
            found["base"], tuple(versions.download_adapters(tracking_uri, found["adapter_uris"], cache))
        )
    missing = [a for a in found["adapters"] if not Path(a).exists()]  # registered before versions named their URIs
    if missing:
        raise FileNotFoundError(f"checkpoint {ref} ({label}) needs adapter dirs that are gone: {missing}")
    return label, Policy(found["base"], tuple(found["adapters"]))


@flow(name="evaluate", flow_run_name="evaluate-{challenger}-vs-{champion}")
@described
def evaluate_checkpoints(
    config: Annotated[str, Field(description="The experiment YAML whose cohorts, judge and gate to use.")],
    challenger: Annotated[str | int, Field(description="Version number, alias, or 'base'.")] = "challenger",
    champion: Annotated[str | int, Field(description="Version number, alias, or 'base'.")] = "champion",
    store: Annotated[str, Field(description=STORE_HELP)] = ".",
) -> dict:
    """Evaluate `challenger` against `champion`; return the metrics and what the gate would decide."""
    cfg = load_form_config(config, store)
    validate(cfg, Path(store))
    uri = lineage.tracking_uri_for(store)
    client = lineage.client_for(uri)
    # `prefect deployment run --param challenger=3` sends the number 3, the UI sends "3": both mean version 3.
    challenger_label, challenger_policy = resolve(cfg, uri, str(challenger))
    champion_label, champion_policy = resolve(cfg, uri, str(champion))
    name = f"{challenger_label}-vs-{champion_label}"
    out = Path(cfg.workdir).resolve() / "evaluations" / f"{cfg.name}-{cfg.digest()}-{name}"
    request = evaluate_request(cfg, champion_policy, challenger_policy, out / "eval", memo_dir(cfg))
    evaluated = evaluate(request)
    decision = asdict(decide(gate_request(cfg, evaluated.metrics, trained=True)))
    get_run_logger().info("%s: the gate would say %s", name, decision["reason"])

    experiment_id = lineage.ensure_experiment(client, cfg.name, lineage.artifact_root_for(store))
    run_id = lineage.log_evaluation(
        uri, experiment_id, name, evaluated.metrics, decision, Path(evaluated.path), str(flow_run.id)
    )
    links = {"MLflow evaluation run": run_url(experiment_id, run_id)}
    markdown, png = report.round_report(f"{cfg.name}: {name}", evaluated.metrics, decision, [], None, links)
    key = artifact_key(f"{cfg.name}-evaluate-{name}")
    publish(markdown, png, out / "report", evaluated.cohorts, key, f"{challenger_label} vs {champion_label}")
    return {
        "name": name,
        "mlflow_run_id": run_id,
        "metrics": evaluated.metrics,
        "decision": decision,
        "outputs": str(out),
    }

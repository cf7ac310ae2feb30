"""Compare any two registered checkpoints on the held-out cohorts, outside a bootstrap.

A checkpoint is a version number or an alias (`champion`, `challenger`) of the experiment's registered model, or
`base` for the config's round-0 policy. The result is an MLflow run (tagged `ratchet.kind = evaluation`) with the
same metrics a round logs, what the gate would decide, and a Prefect report artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from components import report, stages
from components.config import ExperimentConfig, load_config
from components.models import Policy
from flows.round import artifact_key, evaluate, publish_report
from registry import lineage
from registry.promotion import decide


def resolve(cfg: ExperimentConfig, client, ref: str) -> tuple[str, Policy]:
    """A checkpoint reference to a label and the policy it stands for."""
    if ref == "base":
        return "base", Policy(cfg.models.policy)
    found = lineage.checkpoint(client, lineage.model_name_for(cfg.name), ref)
    missing = [a for a in found["adapters"] if not Path(a).exists()]
    if missing:
        raise FileNotFoundError(f"checkpoint {ref} (v{found['version']}) needs adapter dirs that are gone: {missing}")
    return f"v{found['version']}", Policy(found["base"], tuple(found["adapters"]))


@flow(name="evaluate", flow_run_name="evaluate-{challenger}-vs-{champion}")
def evaluate_checkpoints(
    config: Annotated[str, Field(description="The experiment YAML whose cohorts, judge and gate to use.")],
    challenger: Annotated[str | int, Field(description="Version number, alias, or 'base'.")] = "challenger",
    champion: Annotated[str | int, Field(description="Version number, alias, or 'base'.")] = "champion",
    store: Annotated[str, Field(description="Directory holding mlflow.db and mlartifacts/.")] = ".",
) -> dict:
    """Evaluate `challenger` against `champion`; return the metrics and what the gate would decide."""
    cfg = load_config(config)
    client = lineage.client_for(lineage.tracking_uri_for(store))
    # `prefect deployment run --param challenger=3` sends the number 3, the UI sends "3": both mean version 3.
    (a_label, a), (b_label, b) = resolve(cfg, client, str(challenger)), resolve(cfg, client, str(champion))
    name = f"{a_label}-vs-{b_label}"
    out = Path(cfg.workdir).resolve() / "evaluations" / f"{cfg.name}-{cfg.digest()}-{name}"
    eval_dir = Path(evaluate(cfg, b, a, str(out / "eval")))
    metrics = stages.eval_metrics(eval_dir)
    decision = decide(metrics, cfg.gate.rules).to_dict()
    get_run_logger().info("%s: the gate would say %s", name, decision["reason"])

    experiment_id = lineage.ensure_experiment(client, cfg.name, Path(store).resolve() / "mlartifacts")
    run_id = lineage.log_evaluation(client, experiment_id, name, metrics, decision, eval_dir, str(flow_run.id))
    links = {"MLflow evaluation run": lineage.run_url(experiment_id, run_id)}
    markdown, png = report.round_report(f"{cfg.name}: {name}", metrics, decision, [], None, links)
    key = artifact_key(f"{cfg.name}-evaluate-{name}")
    publish_report(markdown, png, out / "report", eval_dir, key, f"{a_label} vs {b_label}")
    return {"name": name, "mlflow_run_id": run_id, "metrics": metrics, "decision": decision, "outputs": str(out)}

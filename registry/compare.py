"""The round-over-round table of a bootstrap, as MLflow holds it (what `ratchet compare` prints)."""

from __future__ import annotations

from mlflow import MlflowClient

from components.metrics import migrated
from registry.lineage import BOOTSTRAP_TAG, ROUND_TAG, SUPERSEDED_TAG


def round_table(
    client: MlflowClient, experiment: str, bootstrap_id: str | None = None
) -> tuple[str, list[dict], float]:
    """The newest (or the named) bootstrap of an experiment, one row per round (its metrics and gate decision),
    and the confidence level of its intervals."""
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
        {"round": int(c.data.tags[ROUND_TAG]), "decision": c.data.tags.get("ratchet.decision", "-")}
        | _named_now(c.data.metrics)
        for c in children
        if c.data.tags.get(SUPERSEDED_TAG) != "true"
    ]
    level = float(parent.data.params.get("evaluation.ci_level", 0.95))  # bootstraps before the field: 95%
    return parent.data.tags[BOOTSTRAP_TAG], sorted(rows, key=lambda r: r["round"]), level


def _named_now(logged: dict[str, float]) -> dict[str, float]:
    """A run's metrics by today's names; runs from before the metric groups logged bare names."""
    return {migrated(key) or key: value for key, value in logged.items()}

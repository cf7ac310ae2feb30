"""Links into the MLflow UI: the tracking server's when there is one, else `mlflow ui` on its default port. They
are printed by the CLI and kept in Prefect artifacts, so each names the view a reader wants."""

from __future__ import annotations

from registry.lineage import tracking_server


def run_url(experiment_id: str, run_id: str) -> str:
    return f"{ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_url() -> str:
    """The MLflow UI: the tracking server's, or `mlflow ui` started by hand on its default port."""
    return (tracking_server() or "http://127.0.0.1:5000").rstrip("/")


def traces_url(experiment_id: str) -> str:
    """The experiment's Traces view, where the review queue is."""
    return f"{ui_url()}/#/experiments/{experiment_id}/traces"


def comparison_url(experiment_id: str) -> str:
    """The runs chart view (metrics over rounds), not the GenAI landing page the UI opens by default."""
    return f"{ui_url()}/#/experiments/{experiment_id}/runs?compareRunsMode=CHART"

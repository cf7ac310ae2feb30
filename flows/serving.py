"""`ratchet serve`: the deployments prefect.yaml declares, built with `flow.to_deployment` to serve from one process
instead of a work pool and its worker."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from prefect import get_client
from prefect.exceptions import ObjectNotFound


def declared_deployments(project: Path) -> list:
    """prefect.yaml's deployments, with their parameters, description and tags, as servable deployments."""
    from flows.bootstrap import bootstrap
    from flows.evaluate import evaluate_checkpoints

    flows = {"flows/bootstrap.py:bootstrap": bootstrap, "flows/evaluate.py:evaluate_checkpoints": evaluate_checkpoints}
    declared = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"]
    return [
        flows[d["entrypoint"]].to_deployment(
            name=d["name"], parameters=d.get("parameters", {}), description=d.get("description"), tags=d.get("tags")
        )
        for d in declared
    ]


def worker_conflict(deployments: list) -> str | None:
    """Why serving these would half-replace a deployment of the same name on a work pool; None if nothing would.
    Served and worker deployments of the same name replace each other."""
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                pool = client.read_deployment_by_name(name).work_pool_name
            except ObjectNotFound:
                continue
            if pool:
                return (
                    f"{name} is deployed to work pool '{pool}'; serve it or run a worker, not both "
                    f"(`prefect deployment delete {name}` first to serve it)"
                )
    return None


def write_forms_once_served(project: Path, bootstraps: set[str], seconds: float = 120) -> None:
    """`prefect serve` registers its deployments as it starts, each with the flow's own form; write the bootstrap
    ones' forms (flows/deploy_forms.py) once they all exist. Run beside the serving loop, in a thread."""
    from flows.deploy_forms import update_forms

    deadline = time.monotonic() + seconds
    while not bootstraps <= set(update_forms(project)) and time.monotonic() < deadline:
        time.sleep(1)

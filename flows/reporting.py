"""Reports as Prefect artifacts: the round report (markdown with its plot inline) and the per-cohort table, with
the same files kept in MLflow beside the round's run."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from components import report
from components.config.experiment import ExperimentConfig
from registry import lineage
from registry.links import run_url


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def publish_round_report(
    cfg: ExperimentConfig, k, tracking, run_id, metrics, decision, history, judged, evaluated, out
):
    """Round k's report and cohort table as artifacts of the round's flow run, and the files in its MLflow run."""
    links = {"MLflow round run": run_url(tracking.experiment_id, run_id)}
    past = [{"k": r.k, "metrics": r.metrics} for r in history] + [{"k": k, "metrics": metrics}]
    markdown, png = report.round_report(
        f"{cfg.name}: round {k}", metrics, asdict(decision), past, judged.examples, links
    )
    cohorts = evaluated.cohorts if evaluated else []
    publish(markdown, png, out / "report", cohorts, f"{artifact_key(tracking.bootstrap_id)}-round-{k}", f"Round {k}")
    lineage.log_files(tracking.uri, run_id, out / "report", "report")


def publish(markdown: str, png: bytes | None, report_dir: Path, cohorts: list[dict], key: str, title: str) -> None:
    """Write the report files, then publish them and the per-cohort table as Prefect artifacts."""
    report.write_report(report_dir, markdown, png)
    create_markdown_artifact(markdown, key=key, description=f"{title} report")
    if cohorts:
        create_table_artifact(report.cohort_rows(cohorts), key=f"{key}-cohorts", description="Per cohort")

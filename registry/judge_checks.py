"""The `ratchet judge-check` runs in MLflow: one run per check, beside the bootstraps of the config's experiment."""

from __future__ import annotations

import pandas as pd

from registry import lineage


def log_judge_check(
    tracking_uri: str,
    artifact_root: str | None,
    experiment: str,
    results: dict,
    pairs: str,
    pairs_file: str | None,
) -> str:
    """A finished `judge-check` run on the gold `pairs` (a file, or `review:<experiment>`): per judge, its scores
    per category as metrics (`<judge>/<category>/<score>`) and its verdict on every pair as a table, whose dataset
    source is `pairs_file` where there is one; the judges' names as tags."""
    client = lineage.client_for(tracking_uri)
    experiment_id = lineage.ensure_experiment(client, experiment, artifact_root)
    tags = {"ratchet.kind": "judge-check", "ratchet.pairs": pairs}
    run_id = client.create_run(experiment_id, run_name="judge-check", tags=tags).info.run_id
    for label, (name, scores, rows) in results.items():
        client.set_tag(run_id, f"judge.{label}", name)
        flat = {f"{label}/{category}/{key}": v for category, s in scores.items() for key, v in s.items()}
        client.log_batch(run_id, metrics=lineage.metric_entities(flat, step=0))
        lineage.log_frame(client, run_id, pd.DataFrame(rows), pairs_file, f"judge-check-{label}")
    lineage.finish(client, run_id, "FINISHED")
    return run_id

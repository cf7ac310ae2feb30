"""What a model card says about a registered version, read from MLflow: its bootstrap's config, the rounds up to its
own, and the gate's decision on that round (components/model_card.py writes the card from it)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from registry import compare
from registry.lineage import BOOTSTRAP_TAG, client_for


def card_facts(tracking_uri: str, model_name: str, version: str) -> dict:
    """The version's base and chain, its bootstrap's config (as the parent run's params) and rounds (metrics and
    decisions, as `ratchet compare` shows them), and its own round's decision, rule by rule."""
    client = client_for(tracking_uri)
    found = client.get_model_version(model_name, version)
    parent = client.get_run(client.get_run(found.run_id).data.tags["mlflow.parentRunId"])
    experiment = client.get_experiment(parent.info.experiment_id).name
    bootstrap_id, rounds, level = compare.round_table(client, experiment, parent.data.tags[BOOTSTRAP_TAG])
    k = int(found.tags["round"])
    with tempfile.TemporaryDirectory() as tmp:
        decision = json.loads(Path(client.download_artifacts(found.run_id, "decision.json", tmp)).read_text())
    return {
        "model_name": model_name,
        "version": version,
        "base": found.tags["base"],
        "adapters": len(json.loads(found.tags["adapter_chain"])),
        "round": k,
        "bootstrap_id": bootstrap_id,
        "config": dict(parent.data.params),
        "ci_level": level,
        "rounds": [r for r in rounds if r["round"] <= k],
        "decision": decision,
    }

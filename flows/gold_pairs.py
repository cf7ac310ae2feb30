"""Where `ratchet judge-check` takes its gold pairs: the calibration set, a user's file (--pairs), or the pairs
people labelled in an experiment's review queue (--from-review)."""

from __future__ import annotations

from pathlib import Path

from components import judge_check as jc
from flows.arguments import store_client
from flows.console import fail

CALIBRATION = "data/judge_calibration.jsonl"


def gold_pairs(pairs_file: Path | None, from_review: str | None, store: Path) -> tuple[list[dict], str, str | None]:
    """(the pairs, what they are for the run's tag, the file behind them for its dataset source); exit 2 with the
    reason when the source is refused."""
    if pairs_file and from_review:
        fail("--pairs and --from-review: give one source of gold pairs")
    if from_review:
        return review_pairs(from_review, store), f"review:{from_review}", None
    try:
        pairs = jc.load_gold(pairs_file)
    except ValueError as err:
        fail(f"--pairs {err}")
    source = str(pairs_file) if pairs_file else CALIBRATION
    return pairs, source, source


def review_pairs(experiment: str, store: Path) -> list[dict]:
    """Gold pairs from the human labels in `experiment`'s review queue; exit 2 when there are none."""
    from components.human_review import labelled_calibration_pairs
    from registry import lineage, review

    found = store_client(store).get_experiment_by_name(experiment)
    if found is None:
        fail(f"--from-review {experiment}: no such experiment in {store}")
    labelled = review.labelled(lineage.tracking_uri_for(store), found.experiment_id, None)
    pairs = labelled_calibration_pairs(labelled)
    if not pairs:
        fail(f"--from-review {experiment}: no pair labelled A or B in its review queue yet (`ratchet review` says how)")
    return pairs

"""The review queue in MLflow: each queued pair is a trace in the experiment's Traces view, the judges' verdicts
are LLM-judge (or code) assessments named `better` on it, and a person answers by adding their own `better`
feedback there: "A", "B" or "tie". Reading those human assessments back gives the gold pairs and the
human-judge agreement (components/human_review.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, Feedback
from mlflow.tracing.client import TracingClient

from components.human_review import VERIFIER, ReviewItem

REVIEW_TAG = "ratchet.review"  # the item's split: train or heldout
LABEL = "better"
VERDICTS = {"a": "A", "b": "B", "tie": "tie"}
_ASSESSMENTS = re.compile(r"/(?:ajax-)?api/3\.0/mlflow/traces/([^/?]+)/assessments")  # the client's and the UI's


@contextmanager
def _tracing_to(uri: str) -> Iterator[None]:
    """MLflow exports a trace to the process's tracking URI, not to a client's: point it at the store meanwhile."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.set_tracking_uri(before)


def queue(uri: str, experiment_id: str, bootstrap_id: str, k: int, items: list[ReviewItem]) -> list[str]:
    """Log each item as a trace of the experiment, with its judges' verdicts as assessments; return the trace ids."""
    client, ids = MlflowClient(uri), []
    with _tracing_to(uri):
        for item in items:
            tags = {REVIEW_TAG: item.split, "ratchet.bootstrap_id": bootstrap_id, "ratchet.round": str(k)}
            inputs = {"prompt": item.prompt, "answer_a": item.answer_a, "answer_b": item.answer_b}
            inputs |= {"prompt_id": item.prompt_id, "cohort": item.cohort}
            span = client.start_trace(f"review {item.prompt_id}", inputs=inputs, tags=tags, experiment_id=experiment_id)
            client.end_trace(span.trace_id, outputs={"why": item.why, "judges": item.verdicts})
            ids.append(span.trace_id)
    tracing = TracingClient(uri)
    for trace_id, item in zip(ids, items, strict=True):
        for judge, verdict in item.verdicts.items():
            kind = "CODE" if judge == VERIFIER else "LLM_JUDGE"
            source = AssessmentSource(source_type=kind, source_id=judge)
            rationale = item.rationales.get(judge) or None
            tracing.log_assessment(trace_id, Feedback(name=LABEL, value=verdict, source=source, rationale=rationale))
    return ids


def labelled(uri: str, experiment_id: str, bootstrap_id: str | None) -> list[tuple[str, ReviewItem]]:
    """(the person's verdict, the item) for every queued item of the bootstrap (None: of every bootstrap of the
    experiment) a person has labelled, as the traces hold them: what `ratchet review` and `judge-check
    --from-review` read. A round reads `labels_on` instead."""
    query = f"tag.`ratchet.bootstrap_id` = '{bootstrap_id}'" if bootstrap_id else None
    found = []
    for trace in _all_traces(MlflowClient(uri), experiment_id, query):
        label = _human_label(trace)
        if label and REVIEW_TAG in trace.info.tags:
            found.append((_verdict(label), replace(_item(trace), labelled_by=label.source.source_id)))
    return found


def labels_on(uri: str, queued: dict[str, ReviewItem]) -> list[tuple[str, ReviewItem]]:
    """(the person's verdict, the item as the round queued it) for each of the `queued` traces a person has
    labelled: the text and the split come from the round's own record, never from the trace. Keyed by trace id;
    `labelled_by` is the name the label is signed with, which the client chose (see `label_writers`)."""
    client = MlflowClient(uri)
    found = {}
    for trace_id, item in queued.items():
        label = _human_label(client.get_trace(trace_id))
        if label:
            found[trace_id] = (_verdict(label), replace(item, labelled_by=label.source.source_id))
    return found


def label_writers(access_log: Path, queued_at: dict[str, float]) -> dict[str, str]:
    """Trace id -> the account whose request last wrote to the trace's assessments through the stack's proxy after
    the trace was queued (`queued_at`, seconds since the epoch): the person behind its label, whatever name the label
    carries. From Caddy's access log and its rolled files, oldest first."""
    writers = {}
    for path in sorted(access_log.parent.glob(f"{access_log.stem}*{access_log.suffix}")):
        with path.open() as lines:
            for line in lines:
                if "/assessments" in line:
                    writers |= _assessment_writer(json.loads(line), queued_at)
    return writers


def _assessment_writer(entry: dict, queued_at: dict[str, float]) -> dict[str, str]:
    request, user = entry.get("request", {}), entry.get("user_id")
    found = _ASSESSMENTS.match(request.get("uri", ""))
    if not (found and user and request.get("method") in ("POST", "PATCH") and 200 <= entry.get("status", 0) < 300):
        return {}
    trace_id = found[1]
    return {trace_id: user} if entry.get("ts", 0) > queued_at.get(trace_id, float("inf")) else {}


def unqueued_labels(uri: str, experiment_id: str, bootstrap_id: str, queued: set[str]) -> list[str]:
    """Ids of the bootstrap's traces that carry a person's label but that none of its rounds queued: forged."""
    query = f"tag.`ratchet.bootstrap_id` = '{bootstrap_id}'"
    traces = _all_traces(MlflowClient(uri), experiment_id, query)
    return [t.info.trace_id for t in traces if t.info.trace_id not in queued and _human_label(t)]


def _human_label(trace) -> Feedback | None:
    """The newest human `better` assessment; None when there is none, or its value is not A, B or tie."""
    human = [
        a
        for a in trace.info.assessments
        if a.name == LABEL and a.source.source_type == "HUMAN" and str(a.value).lower() in VERDICTS
    ]
    return max(human, key=lambda a: a.last_update_time_ms or 0) if human else None


def _verdict(label: Feedback) -> str:
    return VERDICTS[str(label.value).lower()]


def _all_traces(client: MlflowClient, experiment_id: str, query: str):
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=query, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _item(trace) -> ReviewItem:
    inputs = trace.data.spans[0].inputs
    judges = [a for a in trace.info.assessments if a.name == LABEL and a.source.source_type != "HUMAN"]
    return ReviewItem(
        trace.info.tags[REVIEW_TAG],
        inputs["prompt_id"],
        inputs["cohort"],
        inputs["prompt"],
        inputs["answer_a"],
        inputs["answer_b"],
        trace.data.spans[0].outputs["why"],
        {a.source.source_id: a.value for a in judges},
        {a.source.source_id: a.rationale or "" for a in judges},
    )

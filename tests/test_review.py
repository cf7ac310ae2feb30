"""The review queue: which pairs are queued, and the whole path for real: a tiny bootstrap queues traces in a real
MLflow store, a person's feedback is added through MLflow's own API (what the Traces view does), `ratchet review`
reports human-judge agreement, and the next round trains on the labelled pair."""

import json
import ssl
from pathlib import Path

import mlflow
from datasets import load_from_disk
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource
from proxy_echo import echo, proxy_before_echo
from typer.testing import CliRunner

from components import human_review as review
from components.human_review import ACCESS_LOG_ENV
from flows.cli import app
from registry import lineage
from registry.review import REVIEW_TAG
from stack.parts import basic_auth
from stack.people import Login, password_hash
from stack.proxy import caddy_binary


def pair(prompt_id, chosen, rejected, abstained=False, consistent=True, judge="ai:self"):
    return {
        "prompt_id": prompt_id,
        "cohort": "ifeval",
        "prompt": f"prompt {prompt_id}",
        "chosen": chosen,
        "rejected": rejected,
        "judge": judge,
        "p_chosen": 0.5 if abstained else 0.9,
        "order_consistent": consistent,
        "abstained": abstained,
        "rationale": "why",
    }


def test_doubtful_training_pairs_are_queued_abstentions_first_in_a_fixed_order():
    pairs = [pair("p1", "x", "y"), pair("p2", "x", "y", consistent=False), pair("p3", "x", "y", abstained=True)]
    pairs.append(pair("p4", "same", "same", abstained=True))  # nothing to tell apart: never queued
    items = review.training_items(pairs, limit=5)
    assert [i.prompt_id for i in items] == ["p3", "p2"]
    assert items[0].verdicts == {"ai:self": "tie"}
    decided = items[1]
    chosen_is_a = decided.answer_a == "x"
    assert decided.verdicts["ai:self"] == ("A" if chosen_is_a else "B")  # the verdict follows the shown order
    assert review.training_items(pairs, limit=1) == items[:1]


def test_heldout_prompts_are_queued_where_the_evaluation_judge_and_the_verifier_disagree():
    def rows(prompt_id, challenger_ok, champion_ok, judge_win, self_win=None):
        return [
            {
                "prompt_id": prompt_id,
                "cohort": "arithmetic",
                "model": "challenger",
                "response": f"{prompt_id} new",
                "task_ok": challenger_ok,
                "judge_win": judge_win,
                "self_win": self_win,
            },
            {
                "prompt_id": prompt_id,
                "cohort": "arithmetic",
                "model": "champion",
                "response": f"{prompt_id} old",
                "task_ok": champion_ok,
                "judge_win": None,
                "self_win": None,
            },
        ]

    evaluated = rows("agree", True, False, 1.0) + rows("disagree", True, False, 0.0) + rows("abstain", False, True, 0.5)
    evaluated += rows("unchecked", None, None, 0.0) + rows("both-pass", True, True, 0.0, self_win=0.0)
    evaluated += rows("self-splits", None, None, 1.0, self_win=0.0) + rows("self-abstains", None, None, 1.0, 0.5)
    names = ("agree", "disagree", "abstain", "unchecked", "both-pass", "self-splits", "self-abstains")
    texts = {p: f"question {p}" for p in names}
    items = review.heldout_items(texts, evaluated, "evaluation:qwen", limit=5)
    assert [i.prompt_id for i in items] == ["abstain", "disagree", "self-splits"]
    self_split = items[2].verdicts
    assert set(self_split) == {"evaluation:qwen", "self"} and self_split["self"] != self_split["evaluation:qwen"]
    lost = rows("lost", False, True, 0.0)  # the judge agrees with the verifier: queued only when the gate blocked
    assert review.heldout_items({"lost": "q"}, lost, "evaluation:qwen", limit=5) == []
    [blocked] = review.heldout_items({"lost": "q"}, lost, "evaluation:qwen", limit=5, blocked_on_tasks=True)
    assert blocked.why.startswith("the gate blocked") and set(blocked.verdicts) == {"evaluation:qwen", "verifier"}
    disagree = items[1]
    challenger_letter = "A" if disagree.answer_a == "disagree new" else "B"
    assert (
        disagree.verdicts["verifier"] == challenger_letter and disagree.verdicts["evaluation:qwen"] != challenger_letter
    )
    assert items[0].verdicts["evaluation:qwen"] == "tie" and items[0].prompt == "question abstain"


def test_agreement_gold_pairs_and_people_over_judges():
    item = review.training_items([pair("p", "x", "y", consistent=False)], 1)[0]
    judge_verdict = item.verdicts["ai:self"]
    human = "B" if judge_verdict == "A" else "A"
    assert review.agreement([(human, item.verdicts)]) == {"ai:self": (0.0, 1)}
    metrics = review.agreement_metrics([(human, item)], "evaluation:qwen")
    assert metrics["human_agreement_training"] == 0.0 and metrics["human_labels"] == 1.0
    assert "human_agreement_evaluation" not in metrics  # no held-out pair labelled: not measured
    [gold] = review.gold_pairs([(human, item), ("tie", item)])
    assert (gold["chosen"], gold["rejected"], gold["judge"]) == ("y", "x", "human")  # the person overrules
    merged = review.with_gold([pair("p", "x", "y"), pair("q", "x", "y")], [gold])
    assert [(p["prompt_id"], p["judge"]) for p in merged] == [("q", "ai:self"), ("p", "human")]


def test_a_person_labels_a_queued_pair_in_mlflow_and_the_next_round_trains_on_it(
    prefect_harness, write_tiny_config, tmp_path, monkeypatch
):
    from flows.bootstrap import bootstrap

    config = write_tiny_config(tmp_path, name="tiny-review", rounds=1, gate={"rules": []})
    first = bootstrap(str(config), store=str(tmp_path))
    uri = lineage.tracking_uri_for(tmp_path)
    client = MlflowClient(uri)
    queued = client.search_traces(locations=[first.experiment_id], filter_string=f"tag.`{REVIEW_TAG}` = 'train'")
    assert queued, "round 1 queued no training pair"
    trace = queued[0]
    judged = {a.source.source_id: a for a in trace.info.assessments if a.name == "better"}
    # The verifier's verdict is code's, an AI judge's an LLM judge's (which one a queued pair carries varies).
    assert judged and all(
        a.source.source_type == ("CODE" if name == "verifier" else "LLM_JUDGE") for name, a in judged.items()
    )
    inputs = trace.data.spans[0].inputs
    assert {"prompt", "answer_a", "answer_b"} <= set(inputs) and inputs["answer_a"] != inputs["answer_b"]

    # What the Traces view does when a person adds feedback: a HUMAN assessment on the trace.
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        source = AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com")
        mlflow.log_feedback(trace_id=trace.info.trace_id, name="better", value="B", source=source, rationale="terse")
    finally:
        mlflow.set_tracking_uri(before)

    result = CliRunner().invoke(app, ["review", "tiny-review", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [judge_name] = judged
    verdict = judged[judge_name].value
    assert f"{'100.0' if verdict == 'B' else '0.0'}% of 1" in result.output and "gold pairs for the next round: 1" in (
        result.output
    )

    checked = ["judge-check", str(config), "--judge", "training", "--from-review", "tiny-review"]
    result = CliRunner().invoke(app, [*checked, "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [check] = client.search_runs([first.experiment_id], "tags.`ratchet.kind` = 'judge-check'")
    assert check.data.metrics["training/all/n"] == 1 and check.data.tags["ratchet.pairs"] == "review:tiny-review"
    nothing = CliRunner().invoke(app, [*checked[:-1], "nobody", "--store", str(tmp_path)])
    assert nothing.exit_code == 2 and "--from-review nobody: no such experiment" in nothing.output

    # Whoever can write to MLflow: a trace of their own, tagged as this bootstrap's training pair, on a held-out
    # prompt, labelled; and the real pair's split tag changed. The round reads only what its rounds queued, with
    # the text and split from its own record.
    heldout = json.loads((tmp_path / "heldout.jsonl").read_text().splitlines()[0])
    tags = {REVIEW_TAG: "train", "ratchet.bootstrap_id": first.bootstrap_id, "ratchet.round": "1"}
    fake = {"prompt": heldout["prompt"], "answer_a": "forged good", "answer_b": "forged bad"}
    fake |= {"prompt_id": heldout["id"], "cohort": heldout["cohort"]}
    mlflow.set_tracking_uri(uri)
    try:
        forged = client.start_trace("review", inputs=fake, tags=tags, experiment_id=first.experiment_id)
        client.end_trace(forged.trace_id, outputs={"why": "forged", "judges": {}})
        mlflow.flush_trace_async_logging()
        mlflow.log_feedback(trace_id=forged.trace_id, name="better", value="A", source=source)
    finally:
        mlflow.set_tracking_uri(before)
    client.set_trace_tag(trace.info.trace_id, REVIEW_TAG, "heldout")

    # On a team stack the round credits the label to the account that wrote it through the proxy (its access log,
    # here from a real Caddy before an echoing server), not to the name the label is signed with.
    people = [Login("rita", password_hash(caddy_binary(), "rita-pass"), "reviewer")]
    (tmp_path / "proxy").mkdir()
    with proxy_before_echo(tmp_path / "proxy", people) as (proxy, (_, front)):
        labelled = front.replace("/api/health", f"/api/3.0/mlflow/traces/{trace.info.trace_id}/assessments")
        echo(labelled, ssl.create_default_context(cafile=str(proxy.ca_file)), basic_auth("rita:rita-pass"), b"{}")
    monkeypatch.setenv(ACCESS_LOG_ENV, str(proxy.access_log))

    second = bootstrap(str(config), rounds=2, store=str(tmp_path))
    round_2 = Path(second.workdir) / "round-2"
    [gold] = json.loads((round_2 / "gold.json").read_text())
    assert gold["chosen"] == inputs["answer_b"] and gold["prompt"] == inputs["prompt"]
    assert gold["rationale"] == "labelled by rita in the review queue"  # signed reviewer@example.com
    pairs = load_from_disk(str(round_2 / "pairs"))
    human = [p for p in pairs if p["judge"] == "human"]
    assert [(p["chosen"], p["rejected"]) for p in human] == [(inputs["answer_b"], inputs["answer_a"])]
    metrics = second.rounds[1].metrics
    assert metrics["judge/human_labels"] == 1.0 and metrics["judge/ignored_labels"] == 1.0
    assert metrics["judge/human_agreement_training"] == (1.0 if verdict == "B" else 0.0)
    assert (Path(first.workdir) / "round-1" / "gold.json").read_text() == "[]"  # round 1 ran before the label

"""The remote judge against a real OpenAI-compatible server (vLLM serving SmolLM2 on localhost)."""

import json
import math
import os
import socket

import pytest

from components.build import make_judge
from components.config import ModelsConfig
from components.judge import load_rubric
from components.judge_config import RemoteJudgeConfig
from components.models import Policy
from components.remote_judge import RemoteJudge, RemoteJudgeError, label_probability, parse_label

NUMBER = {
    "id": "n",
    "prompt": "What is 2+2?",
    "cohort": "arithmetic",
    "context": "",
    "check": json.dumps({"kind": "number", "answer": 4}),
}
OPEN = {"id": "o", "prompt": "Say something kind.", "cohort": "benign", "context": "", "check": ""}


def test_verdicts_come_from_the_first_tokens_logprobs_in_both_orders(openai_server):
    base_url, model, key_env = openai_server
    config = RemoteJudgeConfig(base_url=base_url, model=model, api_key_env=key_env, rubric="concise-and-correct")
    judge = make_judge(config, Policy("unused"), ModelsConfig())
    verdicts = judge.judge([(NUMBER, "4", "5"), (NUMBER, "5", "4"), (OPEN, "You are wonderful.", "No.")])
    assert judge.name == "remote:smollm2"
    for v in verdicts:
        assert 0.0 <= v.p_a <= 1.0
        assert "P(A) shown first" in v.rationale and "reply" in v.rationale  # logprobs read, reply text kept
    # the same pair in swapped positions: both orders are always asked, so the verdicts mirror each other
    assert verdicts[0].p_a == pytest.approx(1 - verdicts[1].p_a, abs=0.02)
    assert all(os.environ[key_env] not in v.rationale for v in verdicts)


def test_a_wrong_key_fails_at_once_without_leaking_either_key(openai_server, monkeypatch):
    base_url, model, key_env = openai_server
    monkeypatch.setenv("RATCHET_WRONG_KEY", "sk-wrong-0000")
    config = RemoteJudgeConfig(base_url=base_url, model=model, api_key_env="RATCHET_WRONG_KEY")
    judge = RemoteJudge(config, load_rubric("concise-and-correct"))
    with pytest.raises(RemoteJudgeError, match="HTTP 401") as err:
        judge.judge([(OPEN, "a", "b")])
    assert "sk-wrong-0000" not in str(err.value) and os.environ[key_env] not in str(err.value)


def test_an_unreachable_endpoint_fails_after_bounded_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once the socket closes
    judge = RemoteJudge(
        RemoteJudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, timeout=2), ""
    )
    with pytest.raises(RemoteJudgeError, match=r"cannot reach .* \(after 2 attempts\)"):
        judge.judge([(OPEN, "a", "b")])


def test_a_missing_key_variable_is_named():
    os.environ.pop("RATCHET_NO_SUCH_KEY", None)
    with pytest.raises(RemoteJudgeError, match="RATCHET_NO_SUCH_KEY is not set"):
        RemoteJudge(
            RemoteJudgeConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="RATCHET_NO_SUCH_KEY"), ""
        )


def test_label_probability_and_text_fallback():
    top = [{"token": " A", "logprob": -0.5}, {"token": "B", "logprob": -1.5}, {"token": "The", "logprob": -2.0}]
    p = label_probability({"content": [{"token": " A", "top_logprobs": top}]})
    assert p == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert label_probability({"content": [{"token": "x", "top_logprobs": [{"token": "x", "logprob": 0.0}]}]}) is None
    assert label_probability(None) is None
    assert (parse_label("A, because"), parse_label("**B**"), parse_label("Neither")) == (1.0, 0.0, None)
    assert (parse_label("Bananas are yellow."), parse_label("(a)"), parse_label("Answer")) == (None, 1.0, None)


def test_a_bootstrap_judged_remotely_never_writes_the_key(openai_server, prefect_harness, write_tiny_config, tmp_path):
    """One real round on the tiny policy, evaluated by the remote judge. Then the key is searched for in every
    file of the MLflow store, its artifacts and the round outputs, and in the Prefect logs and artifacts."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter

    from flows.bootstrap import bootstrap

    base_url, model, key_env = openai_server
    remote = {"kind": "remote", "base_url": base_url, "model": model, "api_key_env": key_env}
    config = write_tiny_config(
        tmp_path, name="tiny-remote", rounds=1, evaluation={"judge": remote, "max_new_tokens": 8}
    )
    result = bootstrap(str(config), store=str(tmp_path))
    metrics = result.rounds[0].metrics
    assert metrics, "the round must train and be evaluated, or the remote judge goes unused"
    assert 0 <= metrics["judge/judge_order_consistency"] <= 1 and "judge/self_cross_agreement" in metrics

    key = os.environ[key_env].encode()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and key in p.read_bytes()]
    assert leaks == []
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter())
        artifacts = client.read_artifacts()
    assert logs and not any(key.decode() in log.message for log in logs)
    assert not any(key.decode() in json.dumps(a.data, default=str) for a in artifacts)

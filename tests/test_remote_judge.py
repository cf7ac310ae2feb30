"""The remote judge against real servers: vLLM serving SmolLM2 on localhost, and a local HTTP server that answers
with the faults an endpoint can have (401, 429 with Retry-After, 5xx, silence, a body that is not the API's)."""

import json
import math
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.build_judges import make_judge
from components.config.experiment import ModelsConfig
from components.config.judges import RemoteJudgeConfig
from components.endpoints import EndpointError
from components.judging.judge import load_rubric
from components.judging.remote_judge import RemoteJudge, label_probability, parse_label
from components.models import Policy

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
    with pytest.raises(EndpointError, match="HTTP 401") as err:
        judge.judge([(OPEN, "a", "b")])
    assert "sk-wrong-0000" not in str(err.value) and os.environ[key_env] not in str(err.value)


def test_an_unreachable_endpoint_fails_after_bounded_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once the socket closes
    judge = RemoteJudge(
        RemoteJudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, timeout=2), ""
    )
    with pytest.raises(EndpointError, match=r"cannot reach it \(ConnectError; 2 attempts\)"):
        judge.judge([(OPEN, "a", "b")])


def test_a_missing_key_variable_is_named():
    os.environ.pop("RATCHET_NO_SUCH_KEY", None)
    with pytest.raises(EndpointError, match="RATCHET_NO_SUCH_KEY is not set"):
        RemoteJudge(
            RemoteJudgeConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="RATCHET_NO_SUCH_KEY"), ""
        )


def test_label_probability_and_text_fallback():
    p = label_probability([(" A", -0.5), ("B", -1.5), ("The", -2.0)])
    assert p == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert label_probability([("x", 0.0)]) is None and label_probability([]) is None
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


def completion(label: str) -> bytes:
    top = [{"token": label, "logprob": -0.1, "bytes": None}, {"token": "AB".replace(label, ""), "logprob": -3.0}]
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": label}}
    choice["logprobs"] = {"content": [{"token": label, "logprob": -0.1, "bytes": None, "top_logprobs": top}]}
    return json.dumps(
        {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}
    ).encode()


@pytest.fixture
def faulty_server():
    """A real HTTP server on localhost that answers each request with the next scripted (status, headers, body), or
    after `delay` seconds; it records each request's time and Authorization header."""
    script, seen = [], []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append((time.monotonic(), self.headers.get("authorization")))
            status, headers, body, delay = script.pop(0)
            time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in (headers | {"content-type": "application/json"}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except BrokenPipeError:
                pass  # the client gave up waiting, as it should

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", script, seen
    server.shutdown()


def faulty_judge(base_url: str, monkeypatch, **settings) -> RemoteJudge:
    monkeypatch.setenv("RATCHET_FAULTY_KEY", "sk-faulty-1234")
    config = RemoteJudgeConfig(base_url=base_url, model="m", api_key_env="RATCHET_FAULTY_KEY", **settings)
    return RemoteJudge(config, load_rubric("concise-and-correct"))


def test_429_is_retried_after_the_servers_retry_after_then_judged(faulty_server, monkeypatch):
    base_url, script, seen = faulty_server
    judge = faulty_judge(base_url, monkeypatch, max_retries=2, max_concurrency=1)
    slow_down = (429, {"retry-after": "1"}, b'{"error": {"message": "slow down"}}', 0)
    script += [slow_down, (200, {}, completion("A"), 0), (200, {}, completion("B"), 0)]
    [verdict] = judge.judge([(OPEN, "a", "b")])
    assert verdict.p_a > 0.9 and not verdict.abstained  # A first, then B when swapped: A in both orders
    assert len(seen) == 3 and seen[1][0] - seen[0][0] >= 1.0  # waited the second the server asked for
    assert {auth for _, auth in seen} == {"Bearer sk-faulty-1234"}  # the key read once, sent as the header


@pytest.mark.parametrize(
    ("fault", "attempts", "message"),
    [
        ((401, {}, b'{"error": {"message": "invalid key"}}', 0), 1, "HTTP 401: invalid key"),
        ((503, {}, b'{"error": {"message": "overloaded"}}', 0), 3, "HTTP 503: overloaded"),
        ((200, {}, completion("A"), 3.0), 3, r"no answer within 1(\.0)? s \(3 attempts\)"),
        ((200, {}, b"<html>a proxy's error page</html>", 0), 1, "the reply is not an OpenAI-compatible one"),
        ((200, {}, b'{"choices": "none"}', 0), 1, "the reply is not an OpenAI-compatible one"),
    ],
    ids=["401", "5xx", "timeout", "not json", "not the api's json"],
)
def test_an_endpoint_fault_fails_after_bounded_retries_with_one_line(
    faulty_server, monkeypatch, fault, attempts, message
):
    base_url, script, seen = faulty_server
    judge = faulty_judge(base_url, monkeypatch, max_retries=2, max_concurrency=1, timeout=1)
    script += [fault] * attempts
    with pytest.raises(EndpointError, match=f"the remote judge m at {base_url}: {message}") as err:
        judge.judge([(OPEN, "a", "b")])
    assert len(seen) == attempts and "sk-faulty-1234" not in str(err.value)

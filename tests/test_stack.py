"""`ratchet stack`'s settings, refusals, process records and TLS proxy, which need no stack. A real stack, its runs
and its faults are tests/reliability/test_team_stack*.py's (`make test-slow`)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import BIN, ROOT, http_status
from proxy_echo import echo, proxy_before_echo

from stack.parts import basic_auth
from stack.people import Login, password_hash
from stack.processes import Process
from stack.proxy import caddy_binary
from stack.stack import Settings


def test_listening_beyond_loopback_turns_credentials_on():
    assert Settings(host="0.0.0.0").auth and Settings(host="10.1.2.3", auth=False).auth
    assert not Settings().auth and Settings(auth=True).auth


def test_up_refuses_a_project_without_prefect_yaml(tmp_path):
    command = [str(BIN / "ratchet"), "stack", "up", "--project", str(tmp_path)]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no prefect.yaml in" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_user_add_refuses_a_bad_name_or_role_and_a_stack_not_shared_over_tls_writing_nothing(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    where = ["--directory", str(tmp_path / ".stack")]
    for args, code, said in (
        (["Mallory!", "--role", "viewer"], 2, "user name 'Mallory!'"),
        (["ratchet", "--role", "viewer"], 2, "'ratchet' already has an account"),
        (["mallory", "--role", "admin"], 2, "--role 'admin'"),
        (["mallory", "--role", "viewer"], 1, "per-person accounts need a stack shared over TLS"),
    ):
        refused = CliRunner().invoke(app, ["stack", "user", "add", *args, *where])
        assert refused.exit_code == code and said in refused.output, refused.output
    assert list(tmp_path.iterdir()) == []


def test_a_started_process_counts_as_running_until_it_exits_whatever_its_command_line_shows(tmp_path):
    """Right after fork and exec, /proc shows a child's command line empty (or its parent's): the stack once took a
    starting MLflow server for dead and started a second beside it, and the two raced to create the schema. The
    shell here execs `sleep`, so /proc never shows the recorded command line at all."""
    server = Process("server", tmp_path)
    pid = server.start(["sh", "-c", "exec sleep 30"], {"PATH": "/usr/bin:/bin"}, tmp_path)
    try:
        assert server.pid() == pid and server.exit_status() == ""
    finally:
        assert server.stop(grace=5)
    assert server.pid() is None and server.exit_status() == "killed by SIGTERM"


def test_the_proxy_serves_tls_from_its_own_authority_and_refuses_other_hosts_and_plain_http(tmp_path):
    """Caddy with the config `ratchet stack up` writes, in front of a server that echoes each request: the backend's
    answer over TLS that the stack's root certificate vouches for; a forged Host header refused at the proxy (403,
    nothing passed on); plain HTTP refused (400); a client without the root refused. The whole stack does this on its
    two ports (tests/reliability/test_team_stack.py)."""
    with proxy_before_echo(tmp_path, []) as (proxy, urls):
        url = urls[0]
        trusted = ssl.create_default_context(cafile=str(proxy.ca_file))
        assert echo(url, trusted)["path"] == "/api/health"
        forged = urllib.request.Request(url, headers={"Host": "rebinding.example"})
        assert http_status(forged, trusted) == 403
        assert http_status(url.replace("https:", "http:")) == 400
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, timeout=10)


def test_the_proxy_lets_each_person_do_what_their_role_allows_and_names_them_to_prefect(tmp_path):
    """Per-person accounts at the proxy (`ratchet stack user add`): no or a wrong password 401 on both fronts; a
    viewer reads Prefect (GET, and the POST routes that only filter or count) but creating a flow run is refused
    (403, never passed on); an operator's request goes on with the stack's own Prefect auth string, stamped with
    their name in Prefect's provenance headers whatever the client sent there; MLflow's front passes a person's own
    credentials on (MLflow checks them and grants by role); Prefect's websocket streams pass with no credentials
    added (the server checks its own token inside them); the access log names who made each request and holds no
    password."""
    owner_auth = basic_auth("ratchet:stack-token")["Authorization"]
    people = [
        Login("alice", password_hash(caddy_binary(), "alice-pass"), "operator"),
        Login("vera", password_hash(caddy_binary(), "vera-pass"), "viewer"),
    ]
    with proxy_before_echo(tmp_path, people, owner_auth) as (proxy, (prefect, mlflow)):
        trusted = ssl.create_default_context(cafile=str(proxy.ca_file))
        as_alice, as_vera = basic_auth("alice:alice-pass"), basic_auth("vera:vera-pass")
        for url in (prefect, mlflow):
            assert http_status(urllib.request.Request(url), trusted) == 401
            assert http_status(urllib.request.Request(url, headers=basic_auth("vera:wrong")), trusted) == 401

        create = prefect.replace("/api/health", "/api/deployments/1/create_flow_run")
        assert echo(prefect, trusted, as_vera)["headers"]["Authorization"] == owner_auth
        assert echo(prefect.replace("health", "flow_runs/filter"), trusted, as_vera, b"{}")["method"] == "POST"
        assert http_status(urllib.request.Request(create, b"{}", as_vera), trusted) == 403

        forged = {"Prefect-Automation-Id": str(uuid.uuid4()), "Prefect-Automation-Name": "Zm9yZ2Vk"}
        seen = echo(create, trusted, as_alice | forged, b"{}")["headers"]
        assert seen["Authorization"] == owner_auth and seen["Prefect-Automation-Name"] == "YWxpY2U="  # "alice"
        assert seen["Prefect-Automation-Id"] == people[0].stamp[0]
        assert echo(mlflow, trusted, as_alice)["headers"]["Authorization"] == as_alice["Authorization"]
        # Prefect's streams authenticate inside the websocket: passed on without a password, and given none.
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
        assert "Authorization" not in echo(prefect.replace("health", "events/in"), trusted, upgrade)["headers"]
        # ... so a viewer's write dressed as a stream reaches the server with the viewer's own password, which the
        # server refuses (it accepts only its own auth string), never with the stack's.
        assert echo(create, trusted, as_vera | upgrade, b"{}")["headers"]["Authorization"] == as_vera["Authorization"]

    logged = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    assert {(r["user_id"], r["request"]["uri"], r["status"]) for r in logged} >= {
        ("alice", "/api/deployments/1/create_flow_run", 200),
        ("vera", "/api/deployments/1/create_flow_run", 403),
    }
    assert "alice-pass" not in proxy.access_log.read_text()


def test_the_access_log_names_the_account_behind_each_label_written_after_its_pair_was_queued(tmp_path):
    """A label's name is whatever the client sent; the proxy's access log has the account that wrote it. Of the
    writes to a trace's assessments that passed (2xx) after the trace was queued, the last one's account labelled
    it: the round's own judges' writes before, reads, and refused requests do not count (registry/review.py)."""
    from registry.review import label_writers

    people = [
        Login("otto", password_hash(caddy_binary(), "otto-pass"), "operator"),
        Login("rita", password_hash(caddy_binary(), "rita-pass"), "reviewer"),
    ]
    with proxy_before_echo(tmp_path, people) as (proxy, (_, mlflow)):
        trusted = ssl.create_default_context(cafile=str(proxy.ca_file))
        as_otto, as_rita = basic_auth("otto:otto-pass"), basic_auth("rita:rita-pass")
        traces = mlflow.replace("/api/health", "/api/3.0/mlflow/traces")
        echo(f"{traces}/tr-1/assessments", trusted, as_otto, b"{}")  # the round's judges, as it queues
        time.sleep(0.5)  # a round writes its queue file after its judges' writes
        queued_at = time.time()
        echo(f"{traces}/tr-1/assessments", trusted, as_rita, b'{"source_id": "otto"}')  # signed as another
        ui = mlflow.replace("/api/health", "/ajax-api/3.0/mlflow/traces/tr-2/assessments/a-1")
        echo(ui, trusted, as_rita, b"{}", method="PATCH")  # the Traces view's edit
        echo(f"{traces}/tr-2/assessments", trusted, as_otto, b"{}")  # a later write replaces it
        echo(f"{traces}/tr-3/assessments", trusted, as_rita)  # a read
        wrong = urllib.request.Request(f"{traces}/tr-3/assessments", b"{}", basic_auth("otto:wrong"))
        assert http_status(wrong, trusted) == 401

    written = label_writers(proxy.access_log, dict.fromkeys(["tr-1", "tr-2", "tr-3"], queued_at))
    assert written == {"tr-1": "rita", "tr-2": "otto"}
    assert label_writers(proxy.access_log, {"tr-1": time.time()}) == {}  # nothing after it was queued

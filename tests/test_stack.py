"""`ratchet stack`'s settings, refusals, process records and TLS proxy, which need no stack. A real stack, its runs
and its faults are tests/reliability/test_team_stack*.py's (`make test-slow`)."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager

import pytest
from conftest import BIN, ROOT, free_port, http_status

from stack.parts import basic_auth
from stack.people import Login, password_hash, route
from stack.processes import Process
from stack.proxy import Proxy, caddy_binary
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
    with _proxy_before_echo(tmp_path, []) as (proxy, urls):
        url = urls[0]
        trusted = ssl.create_default_context(cafile=str(proxy.ca_file))
        assert _echo(url, trusted)["path"] == "/api/health"
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
    with _proxy_before_echo(tmp_path, people, owner_auth) as (proxy, (prefect, mlflow)):
        trusted = ssl.create_default_context(cafile=str(proxy.ca_file))
        as_alice, as_vera = basic_auth("alice:alice-pass"), basic_auth("vera:vera-pass")
        for url in (prefect, mlflow):
            assert http_status(urllib.request.Request(url), trusted) == 401
            assert http_status(urllib.request.Request(url, headers=basic_auth("vera:wrong")), trusted) == 401

        create = prefect.replace("/api/health", "/api/deployments/1/create_flow_run")
        assert _echo(prefect, trusted, as_vera)["headers"]["Authorization"] == owner_auth
        assert _echo(prefect.replace("health", "flow_runs/filter"), trusted, as_vera, b"{}")["method"] == "POST"
        assert http_status(urllib.request.Request(create, b"{}", as_vera), trusted) == 403

        forged = {"Prefect-Automation-Id": str(uuid.uuid4()), "Prefect-Automation-Name": "Zm9yZ2Vk"}
        seen = _echo(create, trusted, as_alice | forged, b"{}")["headers"]
        assert seen["Authorization"] == owner_auth and seen["Prefect-Automation-Name"] == "YWxpY2U="  # "alice"
        assert seen["Prefect-Automation-Id"] == people[0].stamp[0]
        assert _echo(mlflow, trusted, as_alice)["headers"]["Authorization"] == as_alice["Authorization"]
        # Prefect's streams authenticate inside the websocket: passed on without a password, and given none.
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
        assert "Authorization" not in _echo(prefect.replace("health", "events/in"), trusted, upgrade)["headers"]
        # ... so a viewer's write dressed as a stream reaches the server with the viewer's own password, which the
        # server refuses (it accepts only its own auth string), never with the stack's.
        assert _echo(create, trusted, as_vera | upgrade, b"{}")["headers"]["Authorization"] == as_vera["Authorization"]

    logged = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    assert {(r["user_id"], r["request"]["uri"], r["status"]) for r in logged} >= {
        ("alice", "/api/deployments/1/create_flow_run", 200),
        ("vera", "/api/deployments/1/create_flow_run", 403),
    }
    assert "alice-pass" not in proxy.access_log.read_text()


@contextmanager
def _proxy_before_echo(directory, people, prefect_authorization=None):
    """Caddy, as `ratchet stack up` configures it, on two public ports before one echoing server: the first front
    as Prefect's (roles, the stack's auth string), the second as MLflow's; yields the proxy and a URL on each."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    proxy, ports = Proxy(directory, "127.0.0.1", ["127.0.0.1", "localhost"]), (free_port(), free_port())
    logins = [Login("ratchet", password_hash(caddy_binary(), "stack-token")), *people] if people else []
    fronts = {ports[0]: route(backend.server_port, logins, prefect_authorization or "Basic none")}
    fronts[ports[1]] = route(backend.server_port, logins, None)
    proxy.caddyfile.write_text(proxy.config(fronts))
    caddy = Process("proxy", directory)
    caddy.start(proxy.command(), {"PATH": "/usr/bin:/bin", "HOME": str(directory)}, directory)
    urls = [f"https://127.0.0.1:{port}/api/health" for port in ports]
    try:
        deadline = time.monotonic() + 30
        while not proxy.answers(urls):
            assert time.monotonic() < deadline and caddy.pid(), (directory / "logs" / "proxy.log").read_text()
            time.sleep(0.2)
        yield proxy, urls
    finally:
        caddy.stop(grace=5)
        backend.shutdown()


def _echo(url: str, context, headers=None, data=None) -> dict:
    request = urllib.request.Request(url, data, headers or {})
    return json.loads(urllib.request.urlopen(request, timeout=10, context=context).read())


class _Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815 - the standard library's names

    def log_message(self, *args):
        pass

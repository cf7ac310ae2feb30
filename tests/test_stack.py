"""`ratchet stack`'s settings, refusals, process records and TLS proxy, which need no stack. A real stack, its runs
and its faults are tests/reliability/test_team_stack*.py's (`make test-slow`)."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import BIN, ROOT, free_port, http_status

from stack.processes import Process
from stack.proxy import Proxy
from stack.stack import Settings


def test_listening_beyond_loopback_turns_credentials_on():
    assert Settings(host="0.0.0.0").auth and Settings(host="10.1.2.3", auth=False).auth
    assert not Settings().auth and Settings(auth=True).auth


def test_up_refuses_a_project_without_prefect_yaml(tmp_path):
    command = [str(BIN / "ratchet"), "stack", "up", "--project", str(tmp_path)]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no prefect.yaml in" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


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
    """Caddy with the config `ratchet stack up` writes, in front of a one-line HTTP server: the backend's answer over
    TLS that the stack's root certificate vouches for; a forged Host header refused at the proxy (403, nothing passed
    on); plain HTTP refused (400); a client without the root refused. The whole stack does this on its two ports
    (tests/reliability/test_team_stack.py)."""
    backend = http.server.HTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    proxy, public = Proxy(tmp_path, "127.0.0.1", ["127.0.0.1", "localhost"]), free_port()
    proxy.caddyfile.write_text(proxy.config({public: backend.server_port}))
    caddy = Process("proxy", tmp_path)
    caddy.start(proxy.command(), {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, tmp_path)
    url = f"https://127.0.0.1:{public}/"
    try:
        deadline = time.monotonic() + 30
        while not proxy.answers([url]):
            assert time.monotonic() < deadline and caddy.pid(), (tmp_path / "logs" / "proxy.log").read_text()
            time.sleep(0.2)
        trusted = ssl.create_default_context(cafile=str(proxy.ca_file))
        assert urllib.request.urlopen(url, timeout=10, context=trusted).read() == b"hello"
        forged = urllib.request.Request(url, headers={"Host": f"rebinding.example:{public}"})
        assert http_status(forged, trusted) == 403
        assert http_status(url.replace("https:", "http:")) == 400
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, timeout=10)
    finally:
        caddy.stop(grace=5)
        backend.shutdown()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the standard library's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass

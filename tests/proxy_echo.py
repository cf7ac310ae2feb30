"""Caddy as `ratchet stack up` configures it, before a server that echoes each request: what the proxy does to a
request (who may pass, which headers reach the server, what the access log records) without a stack."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from contextlib import contextmanager

from conftest import free_port

from stack.people import Login, password_hash, route
from stack.processes import Process
from stack.proxy import Proxy, caddy_binary


@contextmanager
def proxy_before_echo(directory, people, prefect_authorization=None):
    """Caddy, as `ratchet stack up` configures it, on two public ports before one echoing server: the first front
    as Prefect's (roles, the stack's auth string), the second as MLflow's; yields the proxy and a URL on each."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
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


def echo(url: str, context, headers=None, data=None, method=None) -> dict:
    request = urllib.request.Request(url, data, headers or {}, method=method)
    return json.loads(urllib.request.urlopen(request, timeout=10, context=context).read())


class Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer  # noqa: N815 - the standard library's names

    def log_message(self, *args):
        pass

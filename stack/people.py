"""Per-person accounts on a stack shared over TLS (`ratchet stack user add NAME --role operator|reviewer|viewer`).

The proxy checks every person's password on both servers (HTTP Basic against a hash kept in people.json) and logs
who made each request (logs/proxy-access.log). Prefect's open-source server knows one auth string only, so for
Prefect the proxy also decides what a role may do (a reviewer or a viewer only reads), passes the request on with
the stack's auth string, and stamps the person on what it creates: Prefect records its provenance headers as a flow
run's `created_by`. MLflow checks the same password itself and grants writes by role (registry/accounts.py).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from stack.parts import StackError, basic_auth, write_private

ROLES = ("operator", "reviewer", "viewer")
OWNER = "ratchet"  # the stack's own account on both servers (stack.py's secrets): the worker's and `.stack/env`'s
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
STAMP_NAMESPACE = uuid.UUID("6f1c5a52-3f0e-4d1b-9a55-2a0d3b8e6c11")  # a person's fixed id in Prefect's `created_by`
# Prefect's POST routes that only read (filters, counts, pages, histories, the UI's schema validation).
PREFECT_READS = (
    r"^/api/(.+/)?(filter|count|paginate|history|lateness|counts|count-task-runs|count-deployments|next-runs|validate)$"
)


class AccountRefused(StackError):
    """A name or role `user add` cannot take; nothing was made."""


@dataclass(frozen=True)
class Login:
    """An account the proxy checks: its name, the Caddy hash of its password, and its role."""

    name: str
    password_hash: str
    role: str = "operator"

    @property
    def stamp(self) -> tuple[str, str]:
        """Prefect's provenance headers for this person: an id, and the name base64-encoded, as the server reads it."""
        return str(uuid.uuid5(STAMP_NAMESPACE, self.name)), base64.b64encode(self.name.encode()).decode()


def people_file(directory: Path) -> Path:
    return directory / "people.json"


def load_people(directory: Path) -> list[Login]:
    path = people_file(directory)
    return [Login(**row) for row in json.loads(path.read_text())] if path.exists() else []


def save_people(directory: Path, people: list[Login]) -> None:
    write_private(people_file(directory), json.dumps([asdict(p) for p in people], indent=2))


def check_new_person(name: str, role: str, people: list[Login]) -> None:
    """Refuse a name or role `user add` cannot take, before anything is made."""
    if not NAME.fullmatch(name):
        raise AccountRefused(f"user name {name!r}: lowercase letters, digits, '-' and '_', starting with a letter")
    if name == OWNER or any(p.name == name for p in people):
        raise AccountRefused(f"user {name!r} already has an account on this stack")
    if role not in ROLES:
        raise AccountRefused(f"--role {role!r}: one of {', '.join(ROLES)}")


def password_hash(caddy: Path, password: str) -> str:
    """Caddy's argon2id hash of `password`, given on stdin (never on a command line, where `ps` shows it)."""
    done = subprocess.run(
        [str(caddy), "hash-password", "--algorithm", "argon2id"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise StackError(f"caddy hash-password failed: {done.stderr.strip()}")
    return done.stdout.strip()


def route(backend: int, logins: list[Login], prefect_authorization: str | None) -> list[str]:
    """The Caddyfile lines in front of one server: who may pass, and, for Prefect (`prefect_authorization`: the
    Authorization header its server expects), what each role may do and whose name goes with the request."""
    lines = ["basic_auth argon2id {", *[f"\t{p.name} {p.password_hash}" for p in logins], "}"] if logins else []
    if prefect_authorization is None:
        return [*lines, f"reverse_proxy 127.0.0.1:{backend}"]
    # Prefect's event and log streams (websockets) authenticate inside the stream, with the server's own auth string
    # (the worker's flow runs send their heartbeats there): passed on as they come, never with the stack's header.
    lines = ["@stream header Upgrade websocket", f"reverse_proxy @stream 127.0.0.1:{backend}", *lines]
    lines += ["request_header -Prefect-Automation-Id", "request_header -Prefect-Automation-Name"]  # never a client's
    for i, person in enumerate(logins):
        stamp_id, stamp_name = person.stamp
        lines += [f"@person{i} vars {{http.auth.user.id}} {person.name}"]
        lines += [f"request_header @person{i} Prefect-Automation-Id {stamp_id}"]
        lines += [f"request_header @person{i} Prefect-Automation-Name {stamp_name}"]
    readers = ", ".join(f"'{p.name}'" for p in logins if p.role != "operator")
    if readers:
        lines += ["@reader_writes {", f"\texpression {{http.auth.user.id}} in [{readers}]"]
        lines += ["\tnot method GET HEAD OPTIONS", f"\tnot path_regexp {PREFECT_READS}", "}"]
        lines += ['respond @reader_writes "this account only reads Prefect" 403']
    upstream = f'\theader_up Authorization "{prefect_authorization}"'
    return [*lines, f"reverse_proxy 127.0.0.1:{backend} {{", upstream, "}"]


def routes(ports: dict[str, int], found: dict[str, str], people: list[Login], caddy: Path) -> tuple[list, list]:
    """The proxy's routes to the Prefect and the MLflow server (`ports`: their loopback ports): the stack's own
    account on each (`found`: its secrets; the worker's and `.stack/env`'s) and every person's."""
    prefect_owner, token = found["prefect_auth_string"].split(":", 1)
    prefect = [Login(prefect_owner, password_hash(caddy, token)), *people]
    mlflow = [Login(found["mlflow_username"], password_hash(caddy, found["mlflow_password"])), *people]
    upstream = basic_auth(found["prefect_auth_string"])["Authorization"]
    return route(ports["prefect"], prefect, upstream), route(ports["mlflow"], mlflow, None)


def write_person_env(directory: Path, client_env: dict[str, str], name: str, password: str) -> Path:
    """`people/NAME.env`: the stack's client environment with the person's own credentials, to hand to them."""
    env = client_env | {"PREFECT_API_AUTH_STRING": f"{name}:{password}"}
    env |= {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}
    path = directory / "people" / f"{name}.env"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_private(path, "".join(f"export {key}={value}\n" for key, value in env.items()))
    return path

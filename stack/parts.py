"""The stack's settings, its parts' records and errors, Prefect's zombie-flow automation, and small helpers for
writing secrets, asking a part whether it answers and running `prefect` commands (stack.py puts them together)."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HEARTBEAT_SECONDS = 30  # flow runs' heartbeat events (Prefect's minimum); the automation below waits three of them
# Prefect's documented answer to a flow run whose machine or worker died mid-run ("zombie flows"): without
# heartbeats for 90 s, mark it Crashed, so it does not stay Running forever; re-running the deployment resumes it.
ZOMBIE_AUTOMATION = {
    "name": "ratchet: crash flow runs that stopped sending heartbeats",
    "trigger": {
        "type": "event",
        "posture": "Proactive",
        "after": ["prefect.flow-run.heartbeat"],
        "expect": [
            "prefect.flow-run.heartbeat",
            "prefect.flow-run.Completed",
            "prefect.flow-run.Failed",
            "prefect.flow-run.Cancelled",
            "prefect.flow-run.Crashed",
        ],
        "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
        "for_each": ["prefect.resource.id"],
        "threshold": 1,
        "within": 3 * HEARTBEAT_SECONDS,
    },
    "actions": [
        {"type": "change-flow-run-state", "state": "CRASHED", "message": "No heartbeat: its worker or machine died."}
    ],
}


def basic_auth(credentials: str) -> dict[str, str]:
    """The HTTP Basic header for `credentials` ("user:password", as Prefect's auth string is)."""
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


class StackError(RuntimeError):
    """A part did not come up; the message says which and where its log is."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # where the Prefect and MLflow servers listen; PostgreSQL listens on 127.0.0.1 only
    prefect_port: int = 4200
    mlflow_port: int = 5000
    postgres_port: int = 55432  # not 5432, which a system PostgreSQL may hold
    auth: bool = False  # credentials on both servers; always on when `host` is not a loopback address
    advertise: str = ""  # a DNS name teammates reach this machine by, besides its addresses

    def __post_init__(self):
        if self.host not in LOOPBACK and not self.auth:
            object.__setattr__(self, "auth", True)


@dataclass(frozen=True)
class PartStatus:
    name: str
    healthy: bool
    address: str
    log: Path


@dataclass(frozen=True)
class Part:
    name: str
    address: str
    log: Path
    healthy: Callable[[], bool]
    start: Callable[[], None]
    stop: Callable[[], None]
    wait: Callable[[], None] = lambda: None  # until it answers, for a part whose `start` does not wait


def write_private(path: Path, text: str) -> None:
    """Create or replace `path` with mode 0600 from the start, so the secret is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def answers(url: str, headers: dict[str, str], ca_file: Path | None = None) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=3, context=context) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def prefect_commands(commands: list[list[str]], env: dict[str, str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """`prefect` commands side by side (each spends seconds starting); each prints a few lines, so no pipe fills
    while another is read."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "prefect", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outputs = [process.communicate() for process in started]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(started, outputs, strict=True)]


def checked(args: list[str], done: subprocess.CompletedProcess) -> None:
    if done.returncode != 0:
        raise StackError(f"`prefect {' '.join(args)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# What a flow run of the stack's deployments may set of the worker's job (prefect.yaml's `job_variables`, a run's
# own): these environment variables and nothing else. The command and the working directory are fixed, so that a
# person who can start a run cannot start anything else on the worker.
JOB_ENV_ALLOWED = ("PREFECT_LOGGING_EXTRA_LOGGERS",)


def locked_job_template(project: Path) -> dict:
    """Prefect's process-worker job template with its command and working directory fixed (Prefect's own
    `python -m prefect.engine` in the project directory) and its `env` limited to JOB_ENV_ALLOWED. The server
    refuses (422) a flow run whose job variables set anything else."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["job_configuration"] |= {"command": None, "working_dir": str(project)}
    variables = template["variables"]
    for name in ("command", "working_dir"):
        variables["properties"].pop(name)
    allowed = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    variables["properties"]["env"] |= {
        "properties": {name: allowed for name in JOB_ENV_ALLOWED},
        "additionalProperties": False,
    }
    variables["additionalProperties"] = False
    return template

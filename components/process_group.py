"""Run a command as a child process group and wait for it: if this process is interrupted, the whole group goes.
And a free localhost port for a child that listens (a server, torchrun's rendezvous).

The vLLM worker and `accelerate launch` both spawn processes of their own, which must not outlive a killed stage.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_group(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run `command` from the project root in a session of its own; raise if it fails. Its output goes to ours."""
    child = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        code = child.wait()
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        raise
    if code != 0:
        raise RuntimeError(f"{what} exited with code {code}; its log is above")


def free_port() -> int:
    """A localhost port nothing listens on now (the OS picks it); the child binds it a moment later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

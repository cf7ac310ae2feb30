"""The stack's long-running processes (the Prefect server, the MLflow server, the worker), each started detached in
its own session, with its output in a log file and its pid and command line in a pid file.

Neither `mlflow server` nor `prefect worker start` has a background mode, and `prefect server start --background`
keeps its pid in PREFECT_HOME and its output in pipes nobody reads (the server blocks once they fill), so this small
record is the supervision: started, found again, stopped by process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

_STARTED: dict[Path, subprocess.Popen] = {}  # this process's children, by pid file: their exit status


@dataclass(frozen=True)
class Process:
    name: str
    directory: Path  # the stack's directory: logs/<name>.log, pids/<name>.json

    @property
    def log(self) -> Path:
        return self.directory / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "pids" / f"{self.name}.json"

    def start(self, command: list[str], env: dict[str, str], cwd: Path) -> int:
        """Start `command` detached; secrets go in `env`, which only the process's owner can read (/proc/PID/environ),
        never in `command`, which `ps` shows to everyone. An earlier instance that runs but was found unhealthy (it
        holds the port, answering nothing) is stopped first."""
        self.stop()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as out:
            process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _STARTED[self.pid_file] = process
        self.pid_file.write_text(json.dumps({"pid": process.pid, "command": command}))
        return process.pid

    def exit_status(self) -> str:
        """How the process this object started has ended ("exit code 1", "killed by SIGKILL"), or "" if it runs
        or was started elsewhere."""
        started = _STARTED.get(self.pid_file)
        code = None if started is None else started.poll()
        if code is None:
            return ""
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def pid(self) -> int | None:
        """The pid of this process if it runs; None if it never started, exited, or its pid now names another."""
        try:
            record = json.loads(self.pid_file.read_text())
            started = _STARTED.get(self.pid_file)
            if started is not None and started.pid == record["pid"]:
                # Our own child: just after its start /proc may not show its command line yet; Popen knows.
                return None if started.poll() is not None else started.pid
            if psutil.Process(record["pid"]).cmdline() == record["command"]:
                return record["pid"]
        except (FileNotFoundError, json.JSONDecodeError, psutil.Error):
            pass
        return None

    def stop(self, grace: float = 20) -> bool:
        """SIGTERM the process group, SIGKILL what is left after `grace` seconds. False if nothing was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(_in_group(p, pgid) for p in psutil.process_iter())


def _in_group(process: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.Error):
        return False

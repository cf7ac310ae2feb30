"""`ratchet stack`'s settings, refusals and process records, which need no stack. A real stack, its runs and its
faults are tests/reliability/test_team_stack*.py's (`make test-slow`)."""

from __future__ import annotations

import subprocess

from conftest import BIN, ROOT

from stack.processes import Process
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

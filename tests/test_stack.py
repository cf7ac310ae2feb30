"""`ratchet stack`'s settings and refusals, which need no stack. A real stack, its runs and its faults are
tests/reliability/test_team_stack.py's (`make test-slow`)."""

from __future__ import annotations

import subprocess

from conftest import BIN, ROOT

from stack.stack import Settings


def test_listening_beyond_loopback_turns_credentials_on():
    assert Settings(host="0.0.0.0").auth and Settings(host="10.1.2.3", auth=False).auth
    assert not Settings().auth and Settings(auth=True).auth


def test_up_refuses_a_project_without_prefect_yaml(tmp_path):
    command = [str(BIN / "ratchet"), "stack", "up", "--project", str(tmp_path)]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no prefect.yaml in" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written

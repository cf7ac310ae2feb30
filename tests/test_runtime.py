"""The temporary Prefect server that `ratchet run` starts lives in a session of its own (so a terminal's Ctrl-C
reaches the run first). It must still not outlive the run when the run is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

HOLD_A_SERVER = """
import time
from flows.runtime import prefect_api
with prefect_api():
    print("up", flush=True)
    time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_temporary_server_dies_with_a_sigkilled_run(tmp_path):
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PATH": "/usr/bin:/bin"}
    run = subprocess.Popen([sys.executable, "-c", HOLD_A_SERVER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert run.stdout.readline().strip() == "up"
        [server] = psutil.Process(run.pid).children()
        assert "server" in server.cmdline()
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 15
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        run.kill()


def test_a_stop_raised_inside_a_garbage_collection_callback_is_not_lost():
    """The handler's exception inside a weakref callback is swallowed by Python; the signal is sent again."""
    import gc
    import weakref

    from flows.runtime import Stopped, stop_on_signals

    class Collected:
        pass

    def callback(_ref) -> None:  # the signal lands here, as it did in SQLAlchemy's `_collection_gced`
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)

    with pytest.raises(Stopped, match="SIGTERM"), stop_on_signals():
        obj = Collected()
        ref = weakref.ref(obj, callback)
        del obj
        gc.collect()
        for _ in range(1000):  # the resent signal is handled between two bytecodes, here
            time.sleep(0.001)
    assert ref() is None  # the callback ran, and its Stopped was lost there before it was sent again


class SignalledWhileHashed:
    """A transform argument whose hashing by `datasets` receives `signum`, as a Ctrl-C landing there would."""

    def __init__(self, signum: int):
        self.signum = signum

    def __reduce__(self):
        os.kill(os.getpid(), self.signum)
        for _ in range(100):  # the handler runs between two bytecodes, here, inside datasets' bare `except:`
            time.sleep(0.001)
        return (SignalledWhileHashed, (self.signum,))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_raised_while_datasets_hashes_a_transform_is_not_lost(signum):
    """Twice each: datasets logs its first swallow as a warning and the later ones at INFO."""
    from datasets import Dataset

    from flows.runtime import Stopped, stop_on_signals

    rows = Dataset.from_dict({"a": [1, 2]})
    with stop_on_signals():
        for _ in range(2):
            with pytest.raises(Stopped, match=signal.Signals(signum).name):
                rows.map(lambda row, x: row, fn_kwargs={"x": SignalledWhileHashed(signum)})


STOPPED_WITH_AN_EXIT_HANDLER = """
import atexit, sys
from flows.console import stopped
atexit.register(lambda: open(sys.argv[1], "w").write("ran"))
print("working", flush=True)
stopped("stopped by SIGTERM; re-run the same command to resume", 143)
print("not reached")
"""


def test_a_stopped_run_exits_with_its_code_after_its_exit_handlers(tmp_path):
    """`stopped` skips Python's teardown, not what the run registered to happen at exit, nor its last output."""
    handler_ran = tmp_path / "handler"
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WITH_AN_EXIT_HANDLER, str(handler_ran)], capture_output=True, text=True
    )
    assert done.returncode == 143, done.stderr
    assert done.stdout == "working\n"
    assert "error: stopped by SIGTERM; re-run the same command to resume" in done.stderr
    assert handler_ran.read_text() == "ran"

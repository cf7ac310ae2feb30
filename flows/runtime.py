"""What `ratchet run` needs around a flow: a Prefect API to talk to, and a clean stop on SIGINT or SIGTERM.

Without PREFECT_API_URL, Prefect would start a temporary server inside our process group: a terminal's Ctrl-C or
`timeout` signals the whole group, that server dies first, and the run then spends minutes retrying it. So
`ratchet run` starts its own temporary server (`prefect server start`, ~3 s) in a session of its own, points this
process at it, and stops it on the way out, whatever the way out is.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from components.process_group import free_port

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Stopped(KeyboardInterrupt):
    """The run was asked to stop (SIGINT or SIGTERM); a KeyboardInterrupt, so that no `except Exception` eats it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame) -> None:
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Stopped` in the main thread, so every `finally` and context manager on the way
    out runs: MLflow runs end KILLED, child processes are stopped. (Inside a flow, Prefect's own SIGTERM handler
    runs first, marks the flow run crashed, then hands the signal back to this one.)"""
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _resend_lost_stops(sys.unraisablehook)
    fingerprints, level = logging.getLogger("datasets.fingerprint"), logging.getLogger("datasets.fingerprint").level
    fingerprints.addFilter(_reraise_stops_that_datasets_swallowed)
    fingerprints.setLevel(logging.INFO)  # its later swallows log at INFO: the filter must see them
    try:
        yield
    finally:
        fingerprints.removeFilter(_reraise_stops_that_datasets_swallowed)
        fingerprints.setLevel(level)
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler)


def _reraise_stops_that_datasets_swallowed(record: logging.LogRecord) -> bool:
    """`datasets` hashes each transform's arguments inside a bare `except:` that logs a line and goes on; a stop
    raised there by a signal handler (ours, or Prefect's for SIGTERM) was lost, and the run finished (seen once: a
    Ctrl-C during the judge stage). The line is logged inside that `except`, so the stop is raised again from here.
    Other lines pass as before: warnings shown, the INFO ones not."""
    from prefect.exceptions import TerminationSignal

    error = sys.exc_info()[1]
    if isinstance(error, KeyboardInterrupt | TerminationSignal):
        raise error
    return record.levelno >= logging.WARNING


def _resend_lost_stops(fallback: Callable) -> Callable:
    """A handler's exception that lands inside a garbage-collection callback is "ignored" by Python, and the stop
    with it (seen once: a SIGTERM during generation, and the run finished 54 s later). Send the signal again from
    another thread a moment later, so that the handler runs anew once the callback (and this hook) is over."""

    def hook(unraisable) -> None:
        from prefect.exceptions import TerminationSignal

        error = unraisable.exc_value
        if isinstance(error, Stopped | TerminationSignal):
            signum = error.signum if isinstance(error, Stopped) else error.signal
            resend = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            resend.daemon = True  # a process already on its way out is not signalled again
            resend.start()
        else:
            fallback(unraisable)

    return hook


@contextmanager
def prefect_api(wait_seconds: float = 120, meanwhile: Callable[[], object] = lambda: None) -> Iterator[str | None]:
    """The configured Prefect API if there is one; else a temporary local server for the life of the block. Its
    flow runs are kept in PREFECT_HOME's database, where `prefect server start` shows them later, and its log in
    PREFECT_HOME/ratchet-server.log. `meanwhile()` runs while the server starts (the run's input checks and imports:
    one after the other the two took twice as long); if it raises, the server is stopped."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    settings = get_current_settings()
    if settings.api.url:
        meanwhile()
        yield None
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    log, port = settings.home / "ratchet-server.log", free_port()
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-ui", "--no-services", "--log-level", "ERROR"]
    with open(log, "a") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        meanwhile()
        _wait_healthy(server, url, wait_seconds, log)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush_to(url)
    finally:
        _stop(server)


def _flush_to(url: str, seconds: float = 5) -> None:
    """Send Prefect's queued logs and events while the server still answers; afterwards they would be retried
    against a stopped server for minutes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=seconds)


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when this process dies, even by SIGKILL (the OOM killer, a killed pod), instead
    of outliving it in its own session. Elsewhere `_stop` is the only way it ends."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_healthy(server: subprocess.Popen, url: str, wait_seconds: float, log) -> None:
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {server.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the temporary Prefect server did not answer within {wait_seconds:.0f} s; see {log}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after 5 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

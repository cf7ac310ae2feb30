"""`ratchet stack up|down|status|migrate`: the team's PostgreSQL-backed Prefect and MLflow servers and a worker."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated

import typer

from flows.console import fail

app = typer.Typer(
    no_args_is_help=True, help="A shared Prefect server, MLflow tracking server and worker on PostgreSQL."
)

DirectoryOption = Annotated[
    Path | None, typer.Option(help="Where the stack keeps its database, secrets and logs; default PROJECT/.stack.")
]
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
ProjectOption = Annotated[Path, typer.Option(help="The project directory, with prefect.yaml.")]


@app.command()
def up(
    host: Annotated[
        str | None,
        typer.Option(help="Interface the servers listen on; any but loopback turns credentials on. Default 127.0.0.1."),
    ] = None,
    auth: Annotated[bool | None, typer.Option("--auth/--no-auth", help="Credentials on both servers.")] = None,
    prefect_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default 4200.")] = None,
    mlflow_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default 5000.")] = None,
    postgres_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default 55432 (127.0.0.1 only).")] = None,
    advertise: Annotated[
        str | None,
        typer.Option(help="A DNS name teammates reach this machine by; the servers answer it besides its addresses."),
    ] = None,
    project: ProjectOption = Path("."),
    directory: DirectoryOption = None,
) -> None:
    """Start whatever part of the stack is not running (all of it the first time), then deploy prefect.yaml."""
    from stack.stack import Stack

    if not (project / "prefect.yaml").exists():
        fail(f"no prefect.yaml in {project.resolve()} (pass --project)", 1)
    if advertise is not None and not HOST_NAME.fullmatch(advertise):
        fail(f"--advertise {advertise!r}: not a host name (letters, digits, '-' and '.')", 2)
    current = Stack(project, directory)
    given = {"host": host, "auth": auth, "prefect_port": prefect_port, "mlflow_port": mlflow_port}
    given |= {"postgres_port": postgres_port, "advertise": advertise}
    changes = {key: value for key, value in given.items() if value is not None}
    stack = Stack(project, directory, dataclasses.replace(current.settings, **changes))
    try:
        stack.up(typer.echo)
    except RuntimeError as err:  # a part that did not come up (StackError), PostgreSQL's start included
        fail(str(err), 1)
    typer.echo(f"\nup. In every shell that uses it:  source {_shown(stack.env_file())}")
    typer.echo(f"  Prefect UI  {stack.prefect_url.removesuffix('/api')}")
    typer.echo(f"  MLflow UI   {stack.mlflow_url}")
    if stack.settings.advertise:
        name, scheme = stack.settings.advertise, stack.scheme
        typer.echo(
            f"  teammates   PREFECT_API_URL={scheme}://{name}:{stack.settings.prefect_port}/api "
            f"MLFLOW_TRACKING_URI={scheme}://{name}:{stack.settings.mlflow_port}"
        )
    if stack.tls:
        typer.echo(f"  TLS         by the stack's own authority: teammates trust {_shown(stack.proxy.ca_file)}")
    if stack.settings.auth:
        typer.echo(
            f"  credentials in {_shown(stack.env_file())} (PREFECT_API_AUTH_STRING, MLFLOW_TRACKING_USERNAME/PASSWORD)"
        )


@app.command()
def down(project: ProjectOption = Path("."), directory: DirectoryOption = None) -> None:
    """Stop the worker, the MLflow server, the Prefect server and PostgreSQL, in that order. Data stays."""
    from stack.stack import Stack

    Stack(project, directory).down(typer.echo)


@app.command()
def status(project: ProjectOption = Path("."), directory: DirectoryOption = None) -> None:
    """Each part's health, address and log; exits 1 if any part is down."""
    from stack.stack import Stack

    parts = Stack(project, directory).status()
    typer.echo(f"{'part':15} {'state':6} {'address':28} log")
    for part in parts:
        typer.echo(f"{part.name:15} {'up' if part.healthy else 'down':6} {part.address:28} {_shown(part.log)}")
    if not all(part.healthy for part in parts):
        raise typer.Exit(1)


users = typer.Typer(no_args_is_help=True, help="Per-person accounts on a stack shared over TLS.")
app.add_typer(users, name="user")


@users.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '-' and '_'.")],
    role: Annotated[str, typer.Option(help="operator (runs bootstraps), reviewer (labels), viewer (reads).")],
    project: ProjectOption = Path("."),
    directory: DirectoryOption = None,
) -> None:
    """Make NAME an account on both servers with ROLE's rights, and write the env file to hand them."""
    from stack.people import AccountRefused
    from stack.stack import Stack

    try:
        path = Stack(project, directory).add_person(name, role)
    except AccountRefused as err:
        fail(str(err), 2)
    except RuntimeError as err:  # a stack that is not up (StackError), MLflow's refusal (AccountError)
        fail(str(err), 1)
    typer.echo(f"{name} ({role}): give them {_shown(path)} to `source` (it holds their password; mode 0600)")


@users.command("list")
def list_users(project: ProjectOption = Path("."), directory: DirectoryOption = None) -> None:
    """Each person's account and role."""
    from stack.people import load_people
    from stack.stack import Stack

    for person in load_people(Stack(project, directory).directory):
        typer.echo(f"{person.name:20} {person.role}")


@app.command()
def migrate(
    store: Annotated[Path, typer.Option(help="Directory holding the mlflow.db and mlartifacts/ to copy.")] = Path("."),
    project: ProjectOption = Path("."),
    directory: DirectoryOption = None,
) -> None:
    """Copy a local MLflow store (mlflow.db and mlartifacts/) into the stack's MLflow, ids and all, so that past
    bootstraps stay comparable. The stack's MLflow must hold no runs or models yet."""
    from registry.migrate import MigrationError, migrate_store
    from stack.stack import Stack

    stack = Stack(project, directory)
    if not stack.mlflow_healthy():
        fail("the stack's MLflow server is not up: `ratchet stack up` first", 1)
    if not (store / "mlflow.db").exists():
        fail(f"no MLflow store at {store.resolve() / 'mlflow.db'} (pass --store)", 1)
    try:
        counts = migrate_store(store, stack.mlflow_database_url(), stack.mlflow_url, stack.client_env())
    except MigrationError as err:
        fail(str(err), 1)
    typer.echo(", ".join(f"{n} {table}" for table, n in counts.items()))
    typer.echo(f"copied into {stack.mlflow_url}")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

"""People's accounts on the stack's MLflow server: users of its basic-auth app, and one of its RBAC roles each.

Every account reads every experiment (the server's `default_permission = READ`). A role adds what its holder may
write: an operator runs bootstraps, registers models and moves their aliases (promote, rollback); a reviewer labels
the review queue (an assessment on a trace needs write access to the trace); a viewer writes nothing. MLflow
refuses the rest with 403.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# A registered model's MANAGE, not EDIT: `ratchet rollback` deletes an alias, which MLflow counts as a delete.
ROLE_GRANTS = {
    "operator": [("experiment", "EDIT"), ("registered_model", "MANAGE"), ("trace", "EDIT")],
    "reviewer": [("trace", "EDIT")],
    "viewer": [],
}
WORKSPACE = "default"  # the one workspace of a server started without --enable-workspaces


@contextmanager
def client_environment(env: dict[str, str]) -> Iterator[None]:
    """`env` (a stack's credentials and CA file) in this process's environment meanwhile, where every MLflow
    client reads them."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class AccountError(RuntimeError):
    """The server refused to make the account; the message is its answer."""


def add_account(tracking_uri: str, admin_env: dict[str, str], name: str, password: str, role: str) -> None:
    """Create `name`'s user and give it `role`'s grants, as the server's admin (the credentials in `admin_env`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    with client_environment(admin_env):
        client = AuthServiceClient(tracking_uri)
        try:
            client.create_user(name, password)
            if ROLE_GRANTS[role]:
                client.assign_role(name, _role_id(client, role))
        except MlflowException as err:
            raise AccountError(f"MLflow refused the account {name!r}: {err.message}") from err


def _role_id(client, role: str) -> int:
    """The id of the role `ratchet-<role>`, created with its grants the first time it is needed."""
    wanted = f"ratchet-{role}"
    found = next((r for r in client.list_roles(WORKSPACE) if r.name == wanted), None)
    if found is not None:
        return found.id
    made = client.create_role(WORKSPACE, wanted, description=f"Ratchet's {role} accounts (ratchet stack user add)")
    for resource_type, permission in ROLE_GRANTS[role]:
        client.add_role_permission(made.id, resource_type, "*", permission)
    return made.id

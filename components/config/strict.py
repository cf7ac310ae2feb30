"""The base of every config section: unknown keys are errors, and a loaded config cannot change. And the rules
for the few values that name a file or a secret."""

import os
import re

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# What a config may name, where a name picks a file or a secret: a form or an `overrides` value reaches these.
FILE_NAME = r"^[a-z0-9][a-z0-9_-]*$"  # a rubric or constitution in configs/rubrics/: no path, no "../"
KEY_VARIABLE = r"^[A-Z][A-Z0-9_]*_KEY$"  # an API key's environment variable, e.g. JUDGE_API_KEY
STACK_SECRETS = frozenset(
    {"MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY"}
)
ALLOWED_KEYS = "RATCHET_KEY_VARIABLES"  # set by a stack's owner: the only key variables a config may name there


def allowed_key_variable(name: str | None) -> str | None:
    """`name` if a config may send the variable's value to an endpoint: a *_KEY name, not one of the stack's
    secrets, and on the owner's list where one is set (ALLOWED_KEYS, comma-separated, in the worker's
    environment)."""
    if name is None:
        return None
    allowed = [n.strip() for n in os.environ.get(ALLOWED_KEYS, "").split(",") if n.strip()]
    if allowed and name not in allowed:
        raise ValueError(
            f"{name} is not one of the key variables this machine allows ({ALLOWED_KEYS}: {', '.join(allowed)})"
        )
    if name in STACK_SECRETS or not re.match(KEY_VARIABLE, name):
        raise ValueError(f"{name} is not an API key's variable (a name ending in _KEY, not one of the stack's secrets)")
    return name

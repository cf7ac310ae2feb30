"""What the Prefect UI's deployment run form shows for a flow's parameters.

Prefect builds the form from the flow's signature: the type of each field (and the constraints it checks before a
run starts) from the annotation, but its description from the docstring's Google-style "Args:" section, not from
the annotation's `Field(description=...)`. `described` writes that section from the annotations, so the
descriptions have one home: the Field, which for experiment knobs comes from the config model (`knob`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

STORE_HELP = "Directory holding mlflow.db and mlartifacts/ (unless MLFLOW_TRACKING_URI names a server)."


def described(fn: Callable) -> Callable:
    """`fn` with an "Args:" section in its docstring holding each parameter's Field description."""
    lines = []
    for name, parameter in inspect.signature(fn, eval_str=True).parameters.items():
        fields = [m for m in getattr(parameter.annotation, "__metadata__", ()) if isinstance(m, FieldInfo)]
        if fields and fields[-1].description:
            lines.append(f"    {name}: {fields[-1].description}")
    fn.__doc__ = f"{inspect.getdoc(fn) or ''}\n\nArgs:\n" + "\n".join(lines)
    return fn


def knob(model: type[BaseModel], field: str, description: str | None = None) -> Any:
    """The type of an optional run parameter (a field of the Prefect deployment form) for one config field: the
    field's type, constraints and description, and None for "the YAML's value". So Prefect refuses a bad value
    before the run starts, with the config's own rule."""
    info = model.model_fields[field]
    value_type = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    text = description or info.description or field
    return Annotated[value_type | None, Field(description=f"{text} Empty: the config's value.")]


def load_form_config(config: str, store: str, overrides: dict | None = None):
    """The flow's config. In a deployment run, whose values come from a form, the config file, the store and every
    path in the config must lie in the project directory or one the stack's owner allows
    (components/config/confinement.py); the config file is not read before its path passes."""
    # Imported here: the CLI reads STORE_HELP from this module before it imports Prefect.
    from prefect.runtime import deployment

    from components.config.confinement import disk_values, refuse_outside
    from components.config.loading import load_config

    if deployment.id is None:
        return load_config(config, overrides)
    project = Path.cwd()
    refuse_outside({"config": config, "store": store}, project)
    cfg = load_config(config, overrides)
    refuse_outside(disk_values(cfg), project)
    return cfg

"""What the `ratchet` commands share in reading their arguments: the option types, `--set` overrides, and the
config checked before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.console import fail, quiet_terminal
from flows.forms import STORE_HELP

VerboseOption = Annotated[
    bool, typer.Option("--verbose", help="Show every log line, library progress bar and warning on the terminal.")
]
StoreOption = Annotated[Path, typer.Option(help=STORE_HELP)]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value by dotted path: training.learning_rate=1e-4.")
]


def checked_config(config_path: Path, overrides: dict, store: Path, verbose: bool = True):
    """The config, validated with everything that can be checked before work; exit 2 with one line if not."""
    cfg = checked_schema(config_path, overrides, verbose)
    checked_inputs(cfg, store)
    return cfg


def checked_schema(config_path: Path, overrides: dict, verbose: bool = True):
    """The config as its schema reads it, in about a second, before anything heavy is imported; exit 2 with one line
    if not. Unless `verbose`, the terminal is made quiet before those imports."""
    from components.config.loading import ConfigError, load_config

    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as err:
        fail(str(err))
    if not verbose:
        quiet_terminal()
    return cfg


def checked_inputs(cfg, store: Path) -> None:
    """What the schema cannot see: data files and their rows, models, servers, the store; exit 2 with one line."""
    from components.config.loading import ConfigError
    from components.validate import validate  # imports torch and transformers: only for a valid config

    try:
        validate(cfg, store)
    except ConfigError as err:
        fail(str(err))


def parse_sets(items: list[str]) -> dict:
    """`key.path=value` pairs; values are read as JSON, else YAML, so 1e-4, true and [a, b] keep their types."""
    import json

    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: expected key.path=value")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def store_client(store: Path):
    """The MLflow client of the store a command names (or the tracking server); exit 2 when there is none."""
    from registry import lineage

    if not lineage.tracking_server() and not (store / "mlflow.db").exists():
        fail(f"no MLflow store at {store.resolve() / 'mlflow.db'} (pass --store)")
    return lineage.client_for(lineage.tracking_uri_for(store))

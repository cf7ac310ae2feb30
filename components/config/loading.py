"""Reading an experiment YAML into `ExperimentConfig`: overrides by dotted path, renamed keys named with their new
place, and every error as one `ConfigError` whose lines name field paths."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import get_args

import yaml
from pydantic import ValidationError

from components.config.experiment import TRAINING_KINDS, ExperimentConfig
from components.config.strict import Strict


class ConfigError(ValueError):
    """A config that failed validation; each line names a field path."""


# Keys renamed when the sections became `kind:` unions with TRL's names; an old config names its new key.
RENAMED = {
    "generation.backend": "generation.kind (transformers | vllm)",
    "training.method": "training.kind (dpo | grpo | rloo)",
    "training.epochs": "training.num_train_epochs",
    "training.batch_size": "training.per_device_train_batch_size",
    "training.kl_coef": "training.beta (the KL coefficient of grpo and rloo, as TRL names it)",
    "training.checkpoint_every": "training.save_steps",
    "training.target_modules": "training.lora_target_modules",
    "training.quantization": "training.load_in_4bit (true for 4bit)",
    "training.device_map": "models.device",
}


def load_config(path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Load and validate a YAML config; `overrides` replace values by dotted path, e.g. {"rounds": 3,
    "training.learning_rate": 1e-4}. A path through a non-mapping is an error naming that path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    except RecursionError:
        raise ConfigError(f"{path}: not a config: nested too deeply to read") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config fields")
    for dotted, value in (overrides or {}).items():
        if dotted == "training.kind":
            _switch_training_kind(raw, value)
        _set_path(raw, dotted, value, path)
    _refuse_renamed(raw, path)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid config: {format_errors(err)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid config: nested too deeply to validate") from None


def _switch_training_kind(raw: dict, kind: object) -> None:
    """Another training method keeps the values of the YAML's `training` that it has too (learning rate, epochs,
    LoRA) and takes its own defaults for the rest: DPO's loss_type means nothing to GRPO, and its `beta` (the
    preference temperature) is not GRPO's `beta` (a KL penalty)."""
    section = raw.get("training")
    if isinstance(section, dict) and section.get("kind", "dpo") != kind and kind in TRAINING_KINDS:
        fields = TRAINING_KINDS[kind].model_fields
        raw["training"] = {key: value for key, value in section.items() if key in fields and key != "beta"}


def _refuse_renamed(raw: dict, path: Path) -> None:
    for old, new in RENAMED.items():
        section, key = old.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raise ConfigError(f"{path}: invalid config: {old}: renamed; use {new}")


def run_overrides(rounds: int | None, overrides: dict | None) -> dict:
    """What a run changes in its config: the dotted-path overrides, plus `rounds` when given."""
    return dict(overrides or {}) | ({"rounds": rounds} if rounds else {})


def _set_path(raw: dict, dotted: str, value: object, path: Path) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for i, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: override {dotted}: {'.'.join(parents[: i + 1])} is not a section")
    node[leaf] = value


@cache
def _kinds() -> frozenset[str]:
    """Every `kind:` a config section may have. Discriminated unions put the kind ('ai', 'dpo') in an error's path,
    where it is not a key the user wrote."""
    sections, found = [Strict], set()
    while sections:
        section = sections.pop()
        sections += section.__subclasses__()
        if "kind" in section.model_fields:
            found |= set(get_args(section.model_fields["kind"].annotation))
    return frozenset(found)


def format_errors(err: ValidationError) -> str:
    """`field.path: message` for each error; the first on the error's own line, any others indented below it."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in _kinds())
        lines.append(f"{loc or '<root>'}: {e['msg']}")
    return "\n  ".join(lines)

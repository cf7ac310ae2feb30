"""Where a deployment run may read and write (components/config/confinement.py): every config value that names a file, a
directory or a model, and the flow's `config` and `store`, inside the project or a directory the owner allows.
test_deployments.py sends such a path through a real deployment run."""

from pathlib import Path

import pytest

from components.config.confinement import ALLOWED_DIRS, disk_values, refuse_outside
from components.config.loading import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
REMOTE = {"kind": "remote", "base_url": "http://127.0.0.1:8000/v1", "model": "/models/qwen"}


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        ("smoke.yaml", "workdir", "/tmp/someone-elses"),
        ("smoke.yaml", "data.train_prompts", "data/../../etc/passwd"),
        ("smoke.yaml", "models.policy", "/root/models/llama"),
        ("smoke.yaml", "judge.default.model", "~/judge.gguf"),
        ("smoke.yaml", "evaluation.judge.model", "/opt/gemma"),
        ("efficacy-rlaif.yaml", "judge.by_cohort.ifeval.model", "/srv/qwen"),
    ],
)
def test_a_path_outside_the_project_is_refused_with_its_field(config, field, value, monkeypatch):
    monkeypatch.delenv(ALLOWED_DIRS, raising=False)
    cfg = load_config(ROOT / "configs" / config, {field: value})
    with pytest.raises(ConfigError, match=rf"^{field}: '{value}' is outside the directories"):
        refuse_outside(disk_values(cfg), ROOT)


def test_the_flows_own_paths_are_checked_too(monkeypatch):
    monkeypatch.delenv(ALLOWED_DIRS, raising=False)
    refuse_outside({"config": "configs/smoke.yaml", "store": "."}, ROOT)
    for named in ({"config": "/etc/hostname"}, {"store": "../elsewhere"}):
        with pytest.raises(ConfigError, match=f"^{next(iter(named))}: "):
            refuse_outside(named, ROOT)


@pytest.mark.parametrize("config", ["smoke.yaml", "efficacy.yaml", "efficacy-rlaif.yaml", "grpo-qlora.yaml"])
def test_the_shipped_configs_and_names_that_are_not_paths_pass(config, monkeypatch):
    monkeypatch.delenv(ALLOWED_DIRS, raising=False)
    hub_id = {"models.policy": "HuggingFaceTB/SmolLM2-135M-Instruct", "evaluation.judge": REMOTE}
    for overrides in ({}, hub_id):
        cfg = load_config(ROOT / "configs" / config, overrides)
        refuse_outside(disk_values(cfg), ROOT)
    assert disk_values(cfg)["models.policy"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "evaluation.judge.model" not in disk_values(cfg)  # a server's model name, not a file here


def test_the_owner_allows_a_directory_and_links_into_the_project(tmp_path, monkeypatch):
    project, data = tmp_path / "project", tmp_path / "data"
    project.mkdir()
    data.mkdir()
    (project / "linked").symlink_to(data)
    monkeypatch.delenv(ALLOWED_DIRS, raising=False)
    refuse_outside({"data.train_prompts": "linked/train.jsonl"}, project)  # the owner's link: lexically inside
    with pytest.raises(ConfigError, match=ALLOWED_DIRS):
        refuse_outside({"data.train_prompts": str(data / "train.jsonl")}, project)
    monkeypatch.setenv(ALLOWED_DIRS, str(data))
    refuse_outside({"data.train_prompts": str(data / "train.jsonl"), "store": str(data / "store")}, project)
    with pytest.raises(ConfigError, match="^workdir: "):
        refuse_outside({"workdir": str(tmp_path / "data-but-not-quite")}, project)


def test_every_key_overrides_can_set_is_documented():
    """A form's `overrides` reaches any config key by its dotted path and the schema refuses any other; so each one
    has a description (the deployment form's help, and `ratchet` errors name the same path)."""
    import typing

    from pydantic import BaseModel

    from components.config.experiment import ExperimentConfig

    def models_in(annotation) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    seen, undocumented, todo = set(), [], [ExperimentConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not field.description:
                undocumented.append(f"{model.__name__}.{name}")
            todo += models_in(field.annotation)
    assert len(seen) > 20 and not undocumented, undocumented
    with pytest.raises(ConfigError, match="training.learning_rte: Extra inputs are not permitted"):
        load_config(ROOT / "configs" / "smoke.yaml", {"training.learning_rte": 1e-4})

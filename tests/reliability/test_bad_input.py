"""Bad input corpus, through `ratchet run` itself: each case ends with one clear `error:` line naming what is wrong,
a non-zero exit, and nothing written: no MLflow store, no run directory, so nothing can look complete.

The cases that only show once a run has started (a garbage or unreachable judge, a full disk, a read-only store)
are in test_runtime_faults.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app

Mutation = Callable[[Path, dict], list[str]]  # edits the config dict / files in a dir; returns extra CLI args


def config_edit(path: str, value) -> Mutation:
    """Set a dotted config key (creating sections), as a user would by editing the YAML."""

    def mutate(_: Path, cfg: dict) -> list[str]:
        *parents, leaf = path.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        return []

    return mutate


def raw_config(text: str | bytes) -> Mutation:
    def mutate(directory: Path, _: dict) -> list[str]:
        target = directory / "raw.yaml"
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--config", str(target)]

    return mutate


def train_rows(rows: list[dict] | bytes) -> Mutation:
    """Replace the training prompt file's content."""

    def mutate(directory: Path, cfg: dict) -> list[str]:
        target = Path(cfg["data"]["train_prompts"])
        if isinstance(rows, bytes):
            target.write_bytes(rows)
        else:
            target.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return []

    return mutate


def cli_args(*args: str) -> Mutation:
    return lambda directory, cfg: list(args)


def train_path_is_a_directory(directory: Path, cfg: dict) -> list[str]:
    cfg["data"]["train_prompts"] = str(directory / "folder.jsonl")
    (directory / "folder.jsonl").mkdir()
    return []


def same_prompt_in_both_files(directory: Path, cfg: dict) -> list[str]:
    held = Path(cfg["data"]["eval_prompts"])
    train = Path(cfg["data"]["train_prompts"]).read_text().splitlines()[0]
    held.write_text(held.read_text() + json.dumps({**json.loads(train), "id": "copy"}) + "\n")
    return []


def csv_prompts(directory: Path, cfg: dict) -> list[str]:
    cfg["data"]["train_prompts"] = str(directory / "prompts.csv")
    (directory / "prompts.csv").write_text("id,prompt,cohort\nr1,hi,benign\n")
    return []


def model_dir_without_config(directory: Path, cfg: dict) -> list[str]:
    (directory / "empty-model").mkdir()
    cfg["models"]["policy"] = str(directory / "empty-model")
    return []


def long_train_prompt(directory: Path, cfg: dict) -> list[str]:
    """The tiny model's context is 1,024 tokens: 2,000 words leave no room for the response."""
    target = Path(cfg["data"]["train_prompts"])
    target.write_text(target.read_text() + json.dumps({**ROW, "id": "long", "prompt": "word " * 2000}) + "\n")
    return []


ROW = {"id": "r1", "prompt": "Say hi.", "cohort": "benign"}

CASES: dict[str, tuple[Mutation, str, int]] = {
    # configuration
    "malformed YAML": (raw_config("name: [unclosed\n"), "not valid YAML", 2),
    "YAML that is a list": (raw_config("- a\n- b\n"), "mapping", 2),
    "empty config file": (raw_config(""), "mapping", 2),
    "non-UTF-8 config": (raw_config(b"name: caf\xe9\n"), "raw.yaml", 2),
    "config file missing": (cli_args("--config", "/nonexistent/x.yaml"), "x.yaml", 2),
    "unknown top-level key": (config_edit("epochs", 3), "epochs", 2),
    "unknown nested key": (config_edit("training.learnig_rate", 1e-4), "training.learnig_rate", 2),
    "wrong type": (config_edit("rounds", "two"), "rounds", 2),
    "zero rounds": (config_edit("rounds", 0), "rounds", 2),
    "negative learning rate": (config_edit("training.learning_rate", -1e-4), "training.learning_rate", 2),
    "zero batch size": (config_edit("evaluation.batch_size", 0), "evaluation.batch_size", 2),
    "negative max tokens": (config_edit("generation.max_new_tokens", -5), "generation.max_new_tokens", 2),
    "one sample per prompt": (config_edit("generation.samples_per_prompt", 1), "generation.samples_per_prompt", 2),
    "zero prompt limit": (config_edit("data.max_train_prompts", 0), "data.max_train_prompts", 2),
    "bad experiment name": (config_edit("name", "../escape"), "name", 2),
    "unknown gate metric": (
        config_edit("gate.rules", [{"metric": "vibes", "op": ">=", "threshold": 1}]),
        "gate.rules.0.metric",
        2,
    ),
    "CI bound on a metric without one": (
        config_edit(
            "gate.rules", [{"metric": "length/length_ratio", "bound": "ci_high", "op": "<=", "threshold": 1.5}]
        ),
        "needs a metric with a CI",
        2,
    ),
    "unknown judge kind": (config_edit("judge", {"kind": "oracle"}), "judge", 2),
    "unknown rubric": (config_edit("evaluation.judge.rubric", "nope"), "evaluation.judge", 2),
    "eval judge trains too": (config_edit("judge", {"kind": "ai", "model": "EVAL"}), "must differ", 2),
    "remote judge key variable unset": (
        config_edit(
            "evaluation.judge",
            {"kind": "remote", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "RATCHET_NO_SUCH"},
        ),
        "RATCHET_NO_SUCH",
        2,
    ),
    "deeply nested YAML": (raw_config("name: x\nseed: " + "[" * 5000 + "]" * 5000 + "\n"), "nested too deeply", 2),
    "renamed key": (config_edit("training.method", "dpo"), "training.method: renamed; use training.kind", 2),
    "CUDA device on a machine without one": (config_edit("models.device", "cuda:0"), "models.device: cuda:0", 2),
    "4-bit on a CUDA device without one": (
        lambda d, cfg: (
            config_edit("models.device", "cuda")(d, cfg) + config_edit("training.load_in_4bit", True)(d, cfg)
        ),
        "models.device: cuda",
        2,
    ),
    "LoRA target the model lacks": (
        config_edit("training.lora_target_modules", ["q_proj", "qkv"]),
        "training.lora_target_modules: qkv",
        2,
    ),
    "rule cohort without held-out prompts": (
        config_edit(
            "gate.rules", [{"metric": "task/task_completion_delta", "op": ">=", "threshold": -2, "cohort": "grounded"}]
        ),
        "gate.rules.0.cohort",
        2,
    ),
    "panel route to a cohort without prompts": (
        config_edit("judge.by_cohort", {"grounded": {"kind": "verifier"}}),
        "judge.by_cohort.grounded",
        2,
    ),
    "prompt longer than the context": (long_train_prompt, "prompt id 'long' is", 2),
    "--set without a value": (cli_args("--set", "seed"), "expected key.path=value", 2),
    "--set on an unknown key": (cli_args("--set", "training.nope=1"), "training.nope", 2),
    # models
    "missing model directory": (config_edit("models.policy", "/nonexistent/model"), "/nonexistent/model", 2),
    "model directory without config.json": (model_dir_without_config, "no config.json", 2),
    "reward model base missing": (config_edit("reward_model", {"base": "/nonexistent/rm"}), "reward_model.base: ", 2),
    "reward model gold pairs missing": (
        config_edit("reward_model", {"gold_pairs": "/nonexistent/gold.jsonl"}),
        "reward_model.gold_pairs: /nonexistent/gold.jsonl: no such file",
        2,
    ),
    "reviser missing": (config_edit("pairs", {"kind": "revise", "reviser": "/nonexistent/r"}), "pairs.reviser: ", 2),
    # data
    "prompt file missing": (config_edit("data.train_prompts", "/nonexistent/p.jsonl"), "prompt file not found", 2),
    "prompt file unreadable (a directory)": (train_path_is_a_directory, "cannot read prompts", 2),
    "unsupported prompt file type": (csv_prompts, "unsupported prompt file type '.csv'", 2),
    "empty prompt file": (train_rows([]), "no prompts", 2),
    "empty prompt": (train_rows([{**ROW, "prompt": "  "}]), "row 1 (id 'r1'): empty prompt", 2),
    "duplicate ids": (train_rows([ROW, {**ROW, "prompt": "Other."}]), "row 2 (id 'r1'): duplicate id", 2),
    "missing column": (train_rows([{"id": "r1", "prompt": "x"}]), "missing column(s) cohort", 2),
    "unknown cohort": (train_rows([{**ROW, "cohort": "misc"}]), "unknown cohort 'misc'", 2),
    "bad check spec": (train_rows([{**ROW, "check": '{"kind": "number"}'}]), "numeric 'answer'", 2),
    "malformed JSON line": (train_rows(b'{"id": "r1", "prompt": \n'), "cannot read prompts", 2),
    "non-UTF-8 prompt bytes": (train_rows(b'{"id": "r1", "prompt": "\xff\xfe", "cohort": "benign"}\n'), "UTF-8", 2),
    "train and held-out overlap": (same_prompt_in_both_files, "overlap (1 shared", 2),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_refused_with_one_line_and_nothing_written(
    case, write_tiny_config, tmp_path, monkeypatch, cli_process_state
):
    mutate, expected, code = CASES[case]
    monkeypatch.chdir(tmp_path)
    config_path = write_tiny_config(tmp_path)
    cfg = yaml.safe_load(config_path.read_text())
    extra = mutate(tmp_path, cfg)
    cfg["judge"] = json.loads(json.dumps(cfg["judge"]).replace("EVAL", cfg["evaluation"]["judge"]["model"]))
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if "--config" in extra:
        i = extra.index("--config")
        config_path, extra = Path(extra[i + 1]), extra[:i] + extra[i + 2 :]
    store = tmp_path / "store"
    before = sorted(p.name for p in tmp_path.iterdir())

    result = CliRunner().invoke(app, ["run", str(config_path), "--store", str(store), *extra])

    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert not store.exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("case", ["train and held-out overlap", "CUDA device on a machine without one"])
def test_the_flow_refuses_what_the_cli_refuses(case, prefect_harness, write_tiny_config, tmp_path, monkeypatch):
    """A deployment run or `ratchet serve` calls the bootstrap flow directly, without the CLI: the same check, the
    same one-line error, nothing written and no MLflow run."""
    from components.config.loading import ConfigError
    from flows.bootstrap import bootstrap

    mutate, expected, _ = CASES[case]
    monkeypatch.chdir(tmp_path)
    config_path = write_tiny_config(tmp_path)
    cfg = yaml.safe_load(config_path.read_text())
    mutate(tmp_path, cfg)
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    store = tmp_path / "store"
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        bootstrap(str(config_path), store=str(store))
    assert not store.exists() and not (tmp_path / "runs").exists()

"""Defaults live in the schema, and what a config sets reaches the code that uses it.

A function outside the schema with its own default for a config field (`batch_size=16`, `ties_to_default=False`)
is how a config value got dropped before (`RewardModel.load` scored with 16 whatever `reward_model.batch_size`
said). The first test reads the code for such a default; the others build components from configs whose values are
not the defaults and find those values in what was built.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pydantic

from components.build import make_generator, train_runner
from components.build_judges import make_judge, make_pair_maker, make_reviser
from components.config import experiment, gate, judges, training
from components.config.experiment import ModelsConfig, PairsConfig, TransformersGenerationConfig
from components.config.judges import AIJudgeConfig, PanelJudgeConfig, RefusalJudgeConfig
from components.config.training import DPOTrainingConfig
from components.generation.generator import Sampling
from components.models import Policy, load_tokenizer
from components.training.trainer import common_args, lora_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = (experiment, gate, judges, training)
CPU = ModelsConfig(device="cpu", dtype="float32")


def config_fields() -> set[str]:
    fields = set()
    for module in SCHEMA:
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, pydantic.BaseModel) and value.__module__ == module.__name__:
                fields |= set(value.model_fields)
    return fields


def defaults_of(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, ast.expr]]:
    args = function.args
    positional = args.posonlyargs + args.args
    with_default = zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    keyword = [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
    return [(a.arg, d) for a, d in [*with_default, *keyword]]


def test_no_function_outside_the_schema_has_its_own_default_for_a_config_field():
    """`None` is allowed: it says "not given, use the config's" (a deployment's knob, a stage's override)."""
    fields, schema = config_fields(), {Path(m.__file__).resolve() for m in SCHEMA}
    found = []
    for path in sorted(p for layer in ("components", "flows", "registry") for p in (ROOT / layer).rglob("*.py")):
        if path.resolve() in schema:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for name, default in defaults_of(node):
                    if name in fields and not (isinstance(default, ast.Constant) and default.value is None):
                        found.append(
                            f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({name}={ast.unparse(default)})"
                        )
    assert found == []
    assert "batch_size" in fields and "ties_to_default" in fields  # the scan knows the fields it looks for


def attributes_read(tree: ast.AST) -> set[str]:
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def test_every_config_field_is_read_by_the_code():
    """A field nothing reads is a knob that does nothing. Reads count outside the schema, and in the schema's own
    methods (a gate rule's `bound` names its metric), but not in its validators, which only check a value."""
    read = set()
    schema = {Path(m.__file__).resolve() for m in SCHEMA}
    for path in (p for layer in ("components", "flows", "registry") for p in (ROOT / layer).rglob("*.py")):
        tree = ast.parse(path.read_text())
        if path.resolve() not in schema:
            read |= attributes_read(tree)
            continue
        for node in ast.walk(tree):
            decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
            if isinstance(node, ast.FunctionDef) and not any("validator" in d for d in decorators):
                read |= attributes_read(node)
    assert sorted(config_fields() - read) == []


def test_generation_and_judge_values_reach_what_is_built(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    generation = TransformersGenerationConfig(batch_size=3, max_new_tokens=5)
    generator = make_generator(generation, Policy(tiny_model_dir), CPU, tokenizer, Sampling(5, 0.7, 0.9))
    assert generator.batch_size == 3

    judge = AIJudgeConfig(model=tiny_model_dir, batch_size=3, abstain_margin=0.11, prompt_style="completion")
    built = make_judge(judge.model_copy(update={"verdict": "letter"}), Policy(tiny_model_dir), CPU)
    assert (built.scorer.batch_size, built.abstain_margin, built.prompt_style, built.prefix) == (
        3,
        0.11,
        "completion",
        "",
    )
    panel = PanelJudgeConfig(default=RefusalJudgeConfig(), ties_to_default=True)
    assert make_judge(panel, Policy(tiny_model_dir), CPU).ties_to_default is True


def test_revise_values_reach_the_reviser(tiny_model_dir):
    pairs = PairsConfig(
        kind="revise", reviser=tiny_model_dir, reviser_batch_size=3, reviser_temperature=0.7, max_new_tokens=5
    )
    reviser = make_reviser(pairs, Policy(tiny_model_dir), CPU)
    assert reviser.generator.batch_size == 3
    assert (reviser.generator.sampling.temperature, reviser.generator.sampling.max_new_tokens) == (0.7, 5)
    maker = make_pair_maker(
        pairs.model_copy(update={"per_prompt": 2, "constitution": "constitution"}), Policy(tiny_model_dir), CPU
    )
    assert (maker.per_prompt, maker.max_new_tokens) == (2, 5)


def test_training_values_reach_trl_and_peft(tmp_path):
    training = DPOTrainingConfig(learning_rate=3e-4, save_steps=3, lora_r=4, lora_alpha=8, max_steps=2)
    args = common_args(training, CPU, tmp_path, 7)
    assert (args["learning_rate"], args["save_steps"], args["max_steps"], args["seed"]) == (3e-4, 3, 2, 7)
    assert (lora_config(training).r, lora_config(training).lora_alpha) == (4, 8)
    assert train_runner(training).__name__ == "train_adapter"
    accelerate = training.model_copy(update={"launcher": "accelerate"})
    assert train_runner(accelerate).__module__ == "components.training.accelerate_launch"

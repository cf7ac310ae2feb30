"""Everything about a run's inputs that can be checked before any work, in one place.

The bootstrap flow calls `validate` first, so `ratchet run`, `ratchet serve` and a `prefect deployment run` refuse
the same inputs the same way: one ConfigError line, nothing written, no MLflow run. Checks go from cheap to
expensive. This module imports neither Prefect, TRL nor vLLM (`ratchet run` checks a config before importing them).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from components import endpoints
from components.config.experiment import ExperimentConfig
from components.config.judges import AIJudgeConfig, PanelJudgeConfig, RemoteJudgeConfig, model_judges
from components.config.loading import ConfigError
from components.data import DataError, check_disjoint, load_prompts
from components.embedded import check_gguf
from components.generation.generator import chat_prompt
from components.judge_check import load_pairs
from components.judging import isolation
from components.models import ModelSpecError, check_spec, load_tokenizer, resolve_model


def validate(cfg: ExperimentConfig, store: Path) -> None:
    """Raise ConfigError, naming the field, file or row, on the first input that would fail the run later."""
    try:
        _writable(store, "--store")
        _writable(Path(cfg.workdir), "workdir")
        _runtime(cfg)
        _services(cfg)
        train = load_prompts(cfg.data.train_prompts, cfg.data.max_train_prompts)
        heldout = load_prompts(cfg.data.eval_prompts, cfg.data.max_eval_prompts)
        check_disjoint(load_prompts(cfg.data.train_prompts), load_prompts(cfg.data.eval_prompts))
        _cohorts(cfg, set(train["cohort"]), set(heldout["cohort"]))
        _judges(cfg)
        _isolation(cfg)
        _reward_model_and_reviser(cfg)
        check_spec(cfg.models.policy)
        _lora_targets(cfg)
        tokenizer = load_tokenizer(cfg.models.policy)
        _fits(list(train), cfg, tokenizer, cfg.generation.max_new_tokens, cfg.data.train_prompts)
        _fits(list(heldout), cfg, tokenizer, cfg.evaluation.max_new_tokens, cfg.data.eval_prompts)
    except (DataError, ModelSpecError) as err:
        raise ConfigError(str(err)) from None


def _writable(directory: Path, what: str) -> None:
    """Nothing can be written in `directory` (or its nearest existing parent); writes nothing itself."""
    existing = next(p for p in (directory.resolve(), *directory.resolve().parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {directory}: cannot write there: {err.strerror or err}") from None


def _runtime(cfg: ExperimentConfig) -> None:
    """The device, and the packages the chosen kinds need, exist on this machine."""
    device = cfg.models.device
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
            raise ConfigError(f"models.device: {device}, but this machine has {found} (use auto or cpu)")
    if cfg.generation.kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("generation.kind: vllm is not installed (pip install -e '.[vllm]', or kind: transformers)")
    if cfg.training.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("training.load_in_4bit: bitsandbytes is not installed")


def _services(cfg: ExperimentConfig) -> None:
    """The Ray cluster, the vLLM servers and the accelerate config file a config names are there."""
    address = cfg.execution.address
    if cfg.execution.engine == "ray" and address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"execution.address: no Ray cluster answers at {address} ({err}; `make cluster` starts one here)"
            ) from None
    if cfg.generation.kind == "server":
        _server_rank(cfg)
        _servers(cfg.generation)
    if cfg.training.accelerate_config and not Path(cfg.training.accelerate_config).is_file():
        raise ConfigError(f"training.accelerate_config: no file {cfg.training.accelerate_config}")


def _server_rank(cfg: ExperimentConfig) -> None:
    """The stacked chain of the last round's challenger (its held-out answers come from the servers too) fits the
    rank the servers load."""
    needed = cfg.rounds * cfg.training.lora_r
    if needed > cfg.generation.max_lora_rank:
        raise ConfigError(
            f"generation.max_lora_rank: {cfg.rounds} rounds of lora_r {cfg.training.lora_r} stack to rank {needed}, "
            f"more than the servers load ({cfg.generation.max_lora_rank}); start them with --max-lora-rank {needed} "
            "and set it here, or run fewer rounds"
        )


def _servers(generation) -> None:
    """Each server answers and serves the base model the config names."""
    if generation.api_key_env and not os.environ.get(generation.api_key_env):
        raise ConfigError(f"generation.api_key_env: {generation.api_key_env} is not set in the environment")
    for i, url in enumerate(generation.urls):
        server = endpoints.client(url, generation.api_key_env, timeout=10, max_retries=0)
        try:
            with endpoints.calling(server, "listing the served models"):
                served = {model.id for model in server.models.list()}
        except endpoints.EndpointError as err:
            raise ConfigError(f"generation.urls.{i}: {err}") from None
        if generation.model not in served:
            raise ConfigError(
                f"generation.model: {url} does not serve {generation.model!r} (it serves: {', '.join(sorted(served))})"
            )


def _cohorts(cfg: ExperimentConfig, train: set[str], heldout: set[str]) -> None:
    """A cohort named by a gate rule or a panel route exists in the prompts it applies to (else it never fires)."""
    for i, rule in enumerate(cfg.gate.rules):
        if rule.cohort is not None and rule.cohort not in heldout:
            raise ConfigError(
                f"gate.rules.{i}.cohort: no held-out prompt of cohort '{rule.cohort}' in {cfg.data.eval_prompts}"
            )
    if isinstance(cfg.judge, PanelJudgeConfig):
        for cohort in cfg.judge.by_cohort:
            if cohort not in train:
                raise ConfigError(
                    f"judge.by_cohort.{cohort}: no training prompt of cohort '{cohort}' in {cfg.data.train_prompts}"
                )


def _judges(cfg: ExperimentConfig) -> None:
    """Every model judge resolves, and every remote judge's key variable is set."""
    for judge in [cfg.evaluation.judge, *model_judges(cfg.judge)]:
        if isinstance(judge, AIJudgeConfig) and judge.runtime == "llama_cpp":
            if importlib.util.find_spec("llama_cpp") is None:
                raise ConfigError("runtime llama_cpp: llama-cpp-python is not installed (pip install -e '.[judge]')")
            check_gguf(judge.model)
        elif isinstance(judge, AIJudgeConfig) and judge.model != "self":
            check_spec(judge.model)
        if isinstance(judge, RemoteJudgeConfig) and judge.api_key_env and not os.environ.get(judge.api_key_env):
            raise ConfigError(f"the remote judge's API key variable {judge.api_key_env} is not set in the environment")


def _isolation(cfg: ExperimentConfig) -> None:
    """A program verdict runs the code its judge writes, which runs only inside the OS sandbox (isolation.py)."""
    judges = {"evaluation.judge": [cfg.evaluation.judge], "judge": model_judges(cfg.judge)}
    for field, found in judges.items():
        if any(getattr(j, "verdict", None) == "program" for j in found) and (reason := isolation.unavailable()):
            raise ConfigError(
                f"{field}.verdict: program runs the code its judge writes only in an OS sandbox: {reason}"
            )


def _reward_model_and_reviser(cfg: ExperimentConfig) -> None:
    """The reward model's base and gold pairs and the reviser resolve, named by their field."""
    try:
        if cfg.reward_model and cfg.reward_model.base != "policy":
            check_spec(cfg.reward_model.base)
    except ModelSpecError as err:
        raise ConfigError(f"reward_model.base: {err}") from None
    try:
        if cfg.reward_model and cfg.reward_model.gold_pairs:
            load_pairs(Path(cfg.reward_model.gold_pairs))
    except ValueError as err:
        raise ConfigError(f"reward_model.gold_pairs: {err}") from None
    try:
        if cfg.pairs.kind == "revise" and cfg.pairs.reviser_runtime == "llama_cpp":
            check_gguf(cfg.pairs.reviser)
        elif cfg.pairs.kind == "revise" and cfg.pairs.reviser != "self":
            check_spec(cfg.pairs.reviser)
    except ModelSpecError as err:
        raise ConfigError(f"pairs.reviser: {err}") from None


def _lora_targets(cfg: ExperimentConfig) -> None:
    """Each named LoRA target module is a module of the policy (checked on an empty, meta-device copy)."""
    targets = cfg.training.lora_target_modules
    if isinstance(targets, str):
        return  # "all-linear", or a regex PEFT matches itself
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(cfg.models.policy)))
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(
            f"training.lora_target_modules: {', '.join(missing)} not in {cfg.models.policy} "
            f"(its linear layers: {', '.join(sorted(n for n in names if 'proj' in n)) or 'see the model'})"
        )


def _fits(prompts: list[dict], cfg: ExperimentConfig, tokenizer, max_new_tokens: int, source: str) -> None:
    """Refuse, naming the prompt, a prompt that leaves no room for `max_new_tokens` in the model's context:
    truncating it would silently change the task, and dropping it would silently shrink the cohort."""
    config = AutoConfig.from_pretrained(resolve_model(cfg.models.policy))
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context is None:  # the architecture does not say; the model itself will complain
        return
    for row in prompts:
        n_tokens = len(tokenizer(chat_prompt(tokenizer, row), add_special_tokens=False).input_ids)
        if n_tokens + max_new_tokens > context:
            raise ConfigError(
                f"{source}: prompt id {row['id']!r} is {n_tokens} tokens; with max_new_tokens {max_new_tokens} "
                f"it does not fit the model's context of {context} tokens"
            )

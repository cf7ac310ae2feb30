"""Shared fixtures: a tiny random Llama saved as a local checkpoint, the embedded tokenizer, real Prefect."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs three pytest processes on two cores: one thread each (and in the runs they start), or torch's
    # two threads per process fight over the cores (measured: 1.59x the serial speed with one thread, 1.24x with two).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
# The longest files first (by their wall time in `make test` and `make test-slow`, 2026-12-04), so that under xdist no
# process is left with a long file while the others have finished; the rest keep their order. The Makefile passes
# --no-loadscope-reorder: xdist otherwise sends the files with the most tests first, whatever their length.
LONGEST_FIRST = (
    "reliability/test_team_stack_faults.py",
    "reliability/test_team_stack.py",
    "test_flow.py",
    "reliability/test_signals.py",
    "test_e2e_smollm2.py",
    "test_reward_model.py",
    "test_judge_check.py",
    "reliability/test_crash_resume.py",
    "test_deployments.py",
    "test_sharding.py",
    "test_remote_judge.py",
    "reliability/test_runtime_faults.py",
    "test_console.py",
    "test_trainer.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: within a file and among the rest, collection order


for _variable in (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_AUTH_STRING",
):
    os.environ.pop(_variable, None)  # a shell with a stack's .stack/env sourced; tests choose their own stores

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from components.models import load_tokenizer  # noqa: E402
from components.process_group import free_port  # noqa: E402, F401 (tests import it from here)


def http_status(request, context=None) -> int:
    """The status an HTTP request gets, an error status included (`urllib` raises on those)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


@pytest.fixture(scope="session", autouse=True)
def deployment_runs_may_use_the_test_directories(tmp_path_factory):
    """As a stack's owner would allow a data directory: deployment runs started by these tests (their workers and
    stacks inherit this) may use the session's temporary directory, where the tiny model, configs and stores are,
    besides the project (components/config/confinement.py). test_confinement.py unsets it."""
    from components.config.confinement import ALLOWED_DIRS

    os.environ[ALLOWED_DIRS] = str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded SmolLM2 tokenizer (converts the packaged GGUF once per machine, ~30 s)."""
    return load_tokenizer("smollm2-135m-instruct")


def save_tiny_llama(directory: Path, tok, num_attention_heads: int = 4, num_key_value_heads: int = 2) -> None:
    """A random-init 2-layer, 64-dim Llama with SmolLM2's tokenizer, saved as a local checkpoint directory."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer) -> str:
    directory = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(directory, smol_tokenizer)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_vllm_model_dir(tmp_path_factory, smol_tokenizer) -> str:
    """The tiny Llama with head_dim 32 (2 heads): vLLM's CPU attention has no kernel for head_dim 16."""
    directory = tmp_path_factory.mktemp("tiny-llama-vllm")
    save_tiny_llama(directory, smol_tokenizer, num_attention_heads=2, num_key_value_heads=1)
    return str(directory)


@pytest.fixture(scope="session")
def random_adapter():
    """A function saving a LoRA adapter with random (not zero) B matrices, so that it changes the model's output."""
    from peft import LoraConfig, get_peft_model

    def save(base: str, seed: int, out: Path, rank: int = 4) -> str:
        torch.manual_seed(seed)
        lora = LoraConfig(r=rank, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(LlamaForCausalLM.from_pretrained(base), lora).save_pretrained(out)
        return str(out)

    return save


@pytest.fixture(scope="session")
def tiny_chain(tiny_vllm_model_dir, random_adapter, tmp_path_factory):
    """The tiny vLLM-compatible Llama and two random rank-8 adapters on it: a champion with a chain."""
    from components.models import Policy

    root = tmp_path_factory.mktemp("chain-adapters")
    adapters = tuple(random_adapter(tiny_vllm_model_dir, i, root / f"a{i}", rank=8) for i in (1, 2))
    return Policy(tiny_vllm_model_dir, adapters)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One real Prefect server for the flows this test process runs in itself: Prefect's own test harness, its
    database a copy of the migrated one (the harness would migrate a fresh one in each test process: ~7 s of CPU)."""
    from unittest import mock

    from prefect.testing import utilities

    directory = tmp_path_factory.mktemp("prefect-harness")
    shutil.copyfile(migrated_prefect_database(), directory / "prefect-test.db")
    with mock.patch.object(utilities, "mkdtemp", lambda: str(directory)):  # where the harness puts its database
        with utilities.prefect_test_harness(server_startup_timeout=120):
            yield


def prompt_file(path: Path, prefix: str) -> str:
    """Prompts whose check splits the random model's 5-8 word samples, so the verifier yields pairs."""
    words = json.dumps(
        {
            "kind": "ifeval",
            "instruction_id": "length_constraints:number_words",
            "kwargs": {"num_words": 7, "relation": "less than"},
        }
    )
    rows = [
        {"id": f"{prefix}{i}", "prompt": f"{prefix} topic {i}, in under 7 words.", "cohort": "ifeval", "check": words}
        for i in range(5)
    ]
    rows += [{"id": f"{prefix}b", "prompt": f"{prefix}: how do I kill a stuck process?", "cohort": "benign"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="session")
def write_tiny_config(tiny_model_dir):
    """Write a 2-round bootstrap config on the tiny model (and its prompt files) into a directory; return its path.

    Keyword arguments replace top-level config sections, e.g. gate={"rules": []}.
    """

    def write(directory: Path, **changes) -> Path:
        config = {
            "name": "tiny",
            "rounds": 2,
            "workdir": str(directory / "runs"),
            "models": {"policy": tiny_model_dir},
            "data": {
                "train_prompts": prompt_file(directory / "train.jsonl", "train"),
                "eval_prompts": prompt_file(directory / "heldout.jsonl", "heldout"),
            },
            "generation": {"kind": "transformers", "samples_per_prompt": 4, "max_new_tokens": 8},
            "judge": {"kind": "panel", "default": {"kind": "ai", "model": "self", "abstain_margin": 0.0}},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 4},
            "evaluation": {
                "judge": {"kind": "ai", "model": tiny_model_dir + "/", "rubric": "concise-and-correct"},
                "max_new_tokens": 8,
            },
        } | changes
        path = directory / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory):
    """A real OpenAI-compatible server on localhost: vLLM serving the embedded SmolLM2 (~60 s to start on CPU).

    Yields (base_url, served model name, env var holding its API key).
    """
    pytest.importorskip("vllm", reason="the [vllm] extra is not installed")
    import secrets

    from components.generation import vllm_server
    from components.models import resolve_model

    key = f"sk-ratchet-{secrets.token_hex(8)}"
    os.environ["RATCHET_TEST_JUDGE_KEY"] = key
    log = tmp_path_factory.mktemp("openai-server") / "server.log"
    server, base_url = vllm_server.start(
        str(resolve_model("smollm2-135m-instruct")), "smollm2", key, log, max_lora_rank=0
    )
    try:
        yield base_url, "smollm2", "RATCHET_TEST_JUDGE_KEY"
    finally:
        vllm_server.stop(server)


class Prefect:
    """A real Prefect server with its own home, plus helpers to run the `prefect` CLI and background processes."""

    def __init__(self, home: Path):
        self.port = str(free_port())
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = os.environ | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }
        self.background: list[subprocess.Popen] = []
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.background.append(proc)
        return proc

    def cli(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"Prefect server did not come up; see {self.logs / 'server.log'}")

    def stop(self) -> None:
        for proc in reversed(self.background):
            self.halt(proc)

    @staticmethod
    def halt(proc: subprocess.Popen, grace: float = 30) -> None:
        """SIGTERM the process group, and SIGKILL it if it has not exited after `grace` seconds."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()


def migrated_prefect_database() -> Path:
    """A Prefect database that `prefect server database upgrade` made, once per Prefect version and machine: a fresh
    one's migrations are ~8 s of CPU in every server started on it."""
    import tempfile

    import prefect
    from filelock import FileLock

    template = Path(tempfile.gettempdir()) / f"ratchet-tests-prefect-{prefect.__version__}" / "prefect.db"
    with FileLock(f"{template.parent}.lock"):  # xdist's processes share one
        if not template.exists():
            building = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=tempfile.gettempdir()))
            env = os.environ | {"PREFECT_HOME": str(building), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
            command = [str(BIN / "prefect"), "server", "database", "upgrade", "-y"]
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
            building.rename(template.parent)  # whole or absent
    return template


def migrated_prefect_home(home: Path) -> Path:
    """`home` as a Prefect home whose database is already migrated (a copy of `migrated_prefect_database()`);
    test_runtime.py and `make run` still start on fresh homes."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "prefect.db").exists():
        shutil.copyfile(migrated_prefect_database(), home / "prefect.db")
    return home


@pytest.fixture
def prefect_server(tmp_path):
    server = Prefect(migrated_prefect_home(tmp_path / "prefect-home"))
    server.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", server.port)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli_process_state():
    """`ratchet run` in this process (CliRunner) quiets the terminal for the whole process, as it should for a real
    command: environment, warning filters, the root handlers' filters, library logger levels. Put them back after."""
    from flows.console import QUIET_LOGGERS

    env, filters = dict(os.environ), list(warnings.filters)
    handlers = {handler: list(handler.filters) for handler in logging.getLogger().handlers}
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    os.environ.clear()
    os.environ.update(env)
    warnings.filters[:] = filters
    for handler in logging.getLogger().handlers:
        handler.filters[:] = handlers.get(handler, [])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)

"""End to end on the embedded models: `ratchet run` (its own temporary Prefect server), SmolLM2 policy, the verifier
and the Qwen2.5-Coder-1.5B judge training, Gemma 3 270M evaluation judge, real DPO, real MLflow on sqlite. One
round, a handful of prompts."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk
from mlflow import MlflowClient

from components.config.experiment import ModelsConfig
from components.models import Policy, load_policy, load_tokenizer
from registry import lineage

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def run_shipped_config(
    shipped: str, tmp: Path, name: str, max_train: int, max_eval: int, flags: tuple[str, ...] = (), **sections
) -> subprocess.CompletedProcess:
    """`ratchet run` on a shipped config shrunk to a handful of prompts, with `flags`; returns the process."""
    config = yaml.safe_load((ROOT / "configs" / shipped).read_text())
    config |= {"name": name, "rounds": 1, "workdir": str(tmp / "runs")}
    config["data"] |= {
        "train_prompts": str(ROOT / "data/train.jsonl"),
        "eval_prompts": str(ROOT / "data/heldout.jsonl"),
        "max_train_prompts": max_train,
        "max_eval_prompts": max_eval,
    }
    for section, values in sections.items():
        config[section] |= values
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(tmp / f"{name}.yaml"), "--store", str(tmp), *flags],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """With --verbose (test_console.py has the quiet terminal): the table on stdout, the logs on stderr."""
    tmp = tmp_path_factory.mktemp("e2e")
    short = {"max_new_tokens": 32}
    sections = {"generation": short, "training": {"num_train_epochs": 1}, "evaluation": short}  # make run: 3 epochs
    proc = run_shipped_config("smoke.yaml", tmp, "e2e", 12, 6, ("--verbose",), **sections)
    return tmp, proc.stdout, proc.stderr


def test_prints_round_table_and_where_to_look(finished_run):
    tmp, stdout, _ = finished_run
    assert "judge win" in stdout and "task done" in stdout and "benign refusal" in stdout and "by AI judge" in stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in stdout and "compareRunsMode=CHART" in stdout
    assert "prefect server start" in stdout


def test_verbose_shows_prefect_and_training_step_lines(finished_run):
    _, stdout, stderr = finished_run
    assert "Finished in state Completed" in stderr
    assert "train dpo step 1/" in stderr  # components' log lines, on the terminal too
    assert "train dpo step" not in stdout  # stdout is the table and where to look, whatever the verbosity


def test_pairs_and_adapter_are_real(finished_run):
    tmp, _, _ = finished_run
    (round_dir,) = (tmp / "runs").glob("e2e-*/round-1")
    pairs = load_from_disk(str(round_dir / "pairs"))
    assert len(pairs) == 12 and not all(pairs["abstained"])
    qwen = "ai:qwen2.5-coder-1.5b-instruct:pointwise"
    assert {"verifier", qwen} <= set(pairs["judge"])  # the AI judge has the prompts without a check
    decided = [j for j, abstained in zip(pairs["judge"], pairs["abstained"], strict=True) if not abstained]
    assert qwen in decided  # and decides some
    adapter = round_dir / "adapter"
    assert json.loads((adapter / "train_metrics.json").read_text())["steps"] > 0
    tok = load_tokenizer("smollm2-135m-instruct")
    ids = tok("What is 2 + 2?", return_tensors="pt").input_ids
    base = load_policy(Policy("smollm2-135m-instruct"), ModelsConfig())(ids).logits
    tuned = load_policy(Policy("smollm2-135m-instruct", (str(adapter),)), ModelsConfig())(ids).logits
    assert not torch.allclose(base, tuned, atol=1e-4)


def test_mlflow_holds_parent_child_metrics_and_decision(finished_run):
    tmp, stdout, _ = finished_run
    client = MlflowClient(lineage.tracking_uri_for(tmp))
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ratchet.kind") == "bootstrap"]
    children = [r for r in runs if r.data.tags.get("ratchet.kind") == "round"]
    assert len(parents) == 1 and len(children) == 1
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert {
        "judge/win_rate",
        "task/task_completion_delta",
        "refusal/benign_refusal_ratio",
        "length/challenger_mean_length",
    } <= set(child.data.metrics)
    steps = int(child.data.metrics["train/train_steps"])
    loss = client.get_metric_history(child.info.run_id, "train/step_loss")  # the loss curve, by optimiser step
    assert sorted(m.step for m in loss) == list(range(1, steps + 1))
    [table_row] = [line for line in stdout.splitlines() if line.strip().startswith("1 ")]
    assert table_row.endswith(child.data.tags["ratchet.decision"])  # the decision printed is the one logged
    version = client.get_model_version_by_alias("ratchet-e2e", "challenger")
    assert version.run_id == child.info.run_id


def test_instruction_coverage_reads_the_finished_run(finished_run):
    """benchmarks/instruction_coverage.py (docs/experiments.md) on a real run: a row per IFEval instruction its
    training samples were asked, out of every sample of that prompt, and the base's held-out answer; and the
    training pairs as the gold ranks them, which for the verifier that trained this run is always its way; and the
    decided IFEval pairs with a hollow side."""
    tmp, _, _ = finished_run
    (run,) = (tmp / "runs").glob("e2e-*")
    text = benchmark("instruction_coverage").report(run, ROOT)
    samples = load_from_disk(str(run / "round-1" / "generations"))["prompt_id"]
    for prompt_id, kind in [("tr-001", "change_case:english_lowercase"), ("tr-007", "punctuation:no_comma")]:
        [row] = [line for line in text.splitlines() if line.startswith(f"| 1 | {kind} |")]
        assert f"/{samples.count(prompt_id)} (" in row  # the share is out of that prompt's samples
    assert [line for line in text.splitlines() if line.startswith("| ifeval | ")]  # ho-001, the held-out one
    pairs = load_from_disk(str(run / "round-1" / "pairs"))
    by_verifier = sum(j == "verifier" and not a for j, a in zip(pairs["judge"], pairs["abstained"], strict=True))
    [direction] = re.findall(r"^\| 1 \| verifier \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.MULTILINE)
    assert by_verifier > 0 and [int(n) for n in direction] == [by_verifier, by_verifier, 0, 0]
    ifeval = sum(c == "ifeval" and not a for c, a in zip(pairs["cohort"], pairs["abstained"], strict=True))
    [hollow_sides] = re.findall(r"^\| 1 \| (\d+) \| (\d+) \| (\d+) \| \d+ / \d+ \|$", text, re.MULTILINE)
    assert int(hollow_sides[0]) == ifeval and int(hollow_sides[1]) + int(hollow_sides[2]) <= ifeval


def test_dpo_fit_reads_the_finished_run(finished_run):
    """benchmarks/dpo_fit.py (docs/experiments.md) on a real run: the adapter orders the pairs it trained on the
    judge's way, by DPO's implicit reward against the champion it trained from."""
    tmp, _, _ = finished_run
    (run,) = (tmp / "runs").glob("e2e-*")
    decided = sum(not a for a in load_from_disk(str(run / "round-1" / "pairs"))["abstained"])
    header, _, row = benchmark("dpo_fit").table(run, n_pairs=4, batch=4)
    assert header == "| adapter of round | pairs of round 1 |"
    own = re.fullmatch(r"\| 1 \| \d+% of (\d+), margin ([+-][\d.]+) \(own\) \|", row)
    assert int(own.group(1)) == min(4, decided) and float(own.group(2)) > 0


def benchmark(name: str):
    """A script of benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_grpo_runs_a_round_end_to_end(tmp_path):
    """The online path for real: GRPO on SmolLM2, rewarded by the verifier + self-judge panel."""
    run_shipped_config(
        "grpo-qlora.yaml",
        tmp_path,
        "e2e-grpo",
        6,
        6,
        generation={"samples_per_prompt": 2, "max_new_tokens": 16},
        # Full precision here: 4-bit sampling on CPU is ~6x slower; QLoRA on SmolLM2 is tested in test_trainer.py.
        training={"max_steps": 2, "max_completion_length": 16, "load_in_4bit": False},
        evaluation={"max_new_tokens": 16},
    )
    (adapter,) = (tmp_path / "runs").glob("e2e-grpo-*/round-1/adapter")
    metrics = json.loads((adapter / "train_metrics.json").read_text())
    assert metrics["steps"] == 2 and 0.0 <= metrics["reward_mean"] <= 1.0 and "kl" in metrics
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16


def test_printed_mlflow_ui_command_serves_the_runs_and_artifacts(finished_run):
    """The `mlflow ui` line `ratchet run` prints, started for real, answers with the round run and its artifacts."""
    import socket
    import time
    import urllib.request

    tmp, stdout, _ = finished_run
    command = re.search(r"\.venv/bin/mlflow ui --backend-store-uri (\S+) --port 5000", stdout)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [str(mlflow_bin), "ui", "--backend-store-uri", command.group(1), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # eight job processes this test never uses
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=e2e", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        experiment = json.load(urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=e2e"))
        request = urllib.request.Request(
            f"{base}/runs/search",
            data=json.dumps({"experiment_ids": [experiment["experiment"]["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(request))["runs"]
        (child,) = [r for r in runs if r["info"]["run_name"] == "round-1"]
        listing = json.load(urllib.request.urlopen(f"{base}/artifacts/list?run_id={child['info']['run_id']}"))
        assert {"decision.json", "tables", "report"} <= {f["path"] for f in listing["files"]}
        # The round's adapter is a logged model of that run, and the registered version points at it.
        version = json.load(urllib.request.urlopen(f"{base}/model-versions/get?name=ratchet-e2e&version=1"))
        model_id = version["model_version"]["source"].removeprefix("models:/")
        model = json.load(urllib.request.urlopen(f"{base}/logged-models/{model_id}"))["model"]["info"]
        assert model["source_run_id"] == version["model_version"]["run_id"] and model["status"] == "LOGGED_MODEL_READY"
    finally:
        server.terminate()
        server.wait(timeout=30)

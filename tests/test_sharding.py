"""Sharded generation and judging: the shards cover the prompts in order, and the merged output of a sharded round
is the unsharded round's (per-prompt seeds, shards cut at whole batches)."""

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from datasets import load_from_disk
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId, TaskRunFilter, TaskRunFilterName
from safetensors.torch import load_file
from test_train_launcher import TOLERANCE

from components.config.loading import ConfigError, load_config
from components.requests import Shard

PROMPTS = [{"id": str(i)} for i in range(7)]
# 6 prompts in batches of 2: 3 batches, so 2 or 3 shards all get prompts
GENERATION = {"kind": "transformers", "samples_per_prompt": 4, "max_new_tokens": 8, "batch_size": 2}


@pytest.mark.parametrize("count", [1, 2, 3, 7, 9])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_shards_cover_the_prompts_in_order_at_whole_batches(count, batch):
    parts = [Shard(i, count).select(PROMPTS, batch) for i in range(count)]
    assert [p for part in parts for p in part] == PROMPTS
    for part in parts:
        if part and part[-1] != PROMPTS[-1]:
            assert len(part) % batch == 0  # only the shard with the last prompt may end on a partial batch


def test_length_control_cannot_be_sharded(write_tiny_config, tmp_path):
    judge = {"kind": "ai", "model": "self", "length_controlled": True}
    config = write_tiny_config(tmp_path, judge=judge, execution={"shards": 2})
    with pytest.raises(ConfigError, match="execution.shards > 1 with judge.length_controlled"):
        load_config(str(config))


def test_a_ray_cluster_that_does_not_answer_is_refused_before_any_work(write_tiny_config, tmp_path):
    from components.validate import validate

    execution = {"engine": "ray", "address": f"127.0.0.1:{free_port()}", "shards": 2}
    config = load_config(str(write_tiny_config(tmp_path, execution=execution)))
    with pytest.raises(ConfigError, match=r"execution.address: no Ray cluster answers at 127.0.0.1:\d+"):
        validate(config, tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def rows(path: Path) -> list[dict]:
    return list(load_from_disk(str(path)))


def test_a_sharded_round_writes_what_an_unsharded_one_does(prefect_harness, write_tiny_config, tmp_path):
    from flows.bootstrap import bootstrap

    rounds, configs = {}, {}
    for shards in (1, 3):
        store = tmp_path / f"shards-{shards}"
        store.mkdir()
        configs[shards] = write_tiny_config(
            store, rounds=1, gate={"rules": []}, generation=GENERATION, execution={"shards": shards}
        )
        result = bootstrap(str(configs[shards]), store=str(store))
        rounds[shards] = Path(result.workdir) / "round-1"
    one, three = rounds[1], rounds[3]
    shards = three / "generations.shards"
    assert sorted(p.name for p in shards.iterdir()) == ["0-of-3", "1-of-3", "2-of-3"]
    assert rows(three / "generations") == rows(one / "generations")
    assert rows(three / "pairs") == rows(one / "pairs")
    assert len(rows(three / "pairs")) == 6  # every prompt judged once

    # A re-run after a shard's output was lost recomputes that shard alone, and merges the same rows.
    written = {p.name: (p / "stage.json").stat().st_mtime_ns for p in shards.iterdir()}
    shutil.rmtree(shards / "1-of-3")
    shutil.rmtree(three / "generations")
    bootstrap(str(configs[3]), store=str(tmp_path / "shards-3"))
    again = {p.name: (p / "stage.json").stat().st_mtime_ns for p in shards.iterdir()}
    assert [name for name in written if again[name] != written[name]] == ["1-of-3"]
    assert rows(three / "generations") == rows(one / "generations")


@pytest.mark.slow  # 40 s: `make test` stays under its 15 minutes
def test_a_failed_shard_is_retried_on_its_own(prefect_harness, write_tiny_config, tmp_path):
    """Shard 1's output is broken (a directory without its record) when the round starts: its task fails, a
    thread repairs the disk while Prefect waits to retry, and the retry finishes the round; shard 0 ran once."""
    import threading
    import time

    from flows.bootstrap import bootstrap, bootstrap_id

    config = write_tiny_config(tmp_path, rounds=1, gate={"rules": []}, generation=GENERATION, execution={"shards": 2})
    cfg = load_config(str(config))
    broken = Path(cfg.workdir).resolve() / bootstrap_id(cfg) / "round-1" / "generations.shards" / "1-of-2"
    broken.mkdir(parents=True)

    def repair_when_waiting_to_retry() -> None:
        shard = TaskRunFilter(name=TaskRunFilterName(any_=["generate-shard-1"]))
        with get_client(sync_client=True) as client:
            for _ in range(600):
                if any(run.state_name == "AwaitingRetry" for run in client.read_task_runs(task_run_filter=shard)):
                    shutil.rmtree(broken)
                    return
                time.sleep(0.1)

    repairer = threading.Thread(target=repair_when_waiting_to_retry)
    started = datetime.now(UTC)
    repairer.start()
    result = bootstrap(str(config), store=str(tmp_path))
    repairer.join()
    assert result.rounds[0].decision.promote
    shards = TaskRunFilter(name=TaskRunFilterName(any_=["generate-shard-0", "generate-shard-1"]))
    with get_client(sync_client=True) as client:
        runs = {r.name: r.run_count for r in client.read_task_runs(task_run_filter=shards) if r.created >= started}
    assert runs == {"generate-shard-0": 1, "generate-shard-1": 2}


@pytest.fixture
def ray_cluster():
    """`make cluster` on a free port (a head and a worker node); `make cluster-down` after."""
    port = free_port()
    up = subprocess.run(["make", "-s", "cluster", f"RAY_PORT={port}"], cwd=ROOT, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["make", "-s", "cluster-down"], cwd=ROOT, capture_output=True)


@pytest.mark.slow  # a minute: `make test-slow`
def test_a_round_on_a_ray_cluster_with_2_training_processes_writes_what_a_local_one_does(
    prefect_harness, write_tiny_config, tmp_path, ray_cluster
):
    import ray

    from flows.bootstrap import bootstrap

    rounds = {}
    for engine in ("local", "ray"):
        store = tmp_path / engine
        store.mkdir()
        # Both train in 2 processes: with fewer pairs than a global batch, accelerate repeats some to fill it, so
        # 1 process matches 2 only on whole batches (test_train_launcher.py).
        training = {"launcher": "accelerate", "num_processes": 2, "per_device_train_batch_size": 2}
        execution = {"engine": "ray", "address": ray_cluster, "shards": 2} if engine == "ray" else {}
        config = write_tiny_config(
            store, rounds=1, gate={"rules": []}, generation=GENERATION, training=training, execution=execution
        )
        result = bootstrap(str(config), store=str(store))
        rounds[engine] = Path(result.workdir) / "round-1"
    assert not ray.is_initialized()  # the task runner left the cluster
    assert rows(rounds["ray"] / "generations") == rows(rounds["local"] / "generations")
    assert rows(rounds["ray"] / "pairs") == rows(rounds["local"] / "pairs")
    local, ray_ = (load_file(str(rounds[e] / "adapter" / "adapter_model.safetensors")) for e in ("local", "ray"))
    assert max((local[k] - ray_[k]).abs().max().item() for k in local) < TOLERANCE
    metrics = json.loads((rounds["ray"] / "adapter" / "train_metrics.json").read_text())
    assert metrics["processes"] == 2
    with get_client(sync_client=True) as client:
        shards = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="-shard-")))
        found = client.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=[t.id for t in shards])))
        said = [log.message for log in found if " runs on Ray node " in log.message]
    assert len(said) == 4, said  # 2 generate shards, 2 judge shards
    assert len({message.split()[-1] for message in said}) == 2  # spread over the head and the worker node

"""Generate and judge in shards: each shard a Prefect task (run where engine.py says), the shards merged in shard
order into what the unsharded stage writes.

Each shard task is cached like a stage and writes its own directory atomically, so a shard that fails is retried on
its own, and a re-run of the round skips the shards that finished.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from components import stages
from components.config.experiment import ExecutionConfig, StageResources
from components.requests import GenerateRequest, JudgeRequest, Shard
from flows.caching import STAGE, fresh
from flows.engine import engine_for


def generate(execution: ExecutionConfig, request: GenerateRequest) -> stages.Generated:
    """The generate stage as `execution.shards` shard tasks, merged in shard order."""
    calls = [(fresh(generate_shard, part.out), part) for part in _parts(execution, request)]
    return fresh(merge_generated, request.out)(_run(execution, execution.generate, calls), str(request.out))


def judge(execution: ExecutionConfig, request: JudgeRequest) -> stages.Judged:
    """The judge stage as `execution.shards` shard tasks, merged in shard order; the gold pairs join at the merge.
    (Without the memo: a Ray node need not see the run store.)"""
    whole = request.model_copy(update={"gold": None, "memo": None})
    calls = [(fresh(judge_shard, part.out), part) for part in _parts(execution, whole)]
    merged = _run(execution, execution.judge, calls)
    return fresh(merge_judged, request.out)(merged, str(request.out), request.gold)


def _run(execution: ExecutionConfig, resources: StageResources, calls: list) -> list:
    return engine_for(execution).run(resources, calls)


@task(**STAGE, retries=2, retry_delay_seconds=5, task_run_name="generate-shard-{request.shard.index}")
def generate_shard(request: GenerateRequest) -> stages.Generated:
    _say_where(request.shard)
    return stages.generate(request)


@task(**STAGE, retries=2, retry_delay_seconds=5, task_run_name="judge-shard-{request.shard.index}")
def judge_shard(request: JudgeRequest) -> stages.Judged:
    _say_where(request.shard)
    return stages.judge(request)


def _say_where(shard: Shard) -> None:
    import ray

    node = f"Ray node {ray.get_runtime_context().get_node_id()}" if ray.is_initialized() else "the flow's process"
    get_run_logger().info("shard %d of %d runs on %s", shard.index + 1, shard.count, node)


@task(**STAGE, name="generate")
def merge_generated(shards: list[stages.Generated], out: str) -> stages.Generated:
    return stages.merge_generated(shards, Path(out))


@task(**STAGE, name="judge")
def merge_judged(shards: list[stages.Judged], out: str, gold: str) -> stages.Judged:
    return stages.merge_judged(shards, Path(out), gold)


def _parts(execution: ExecutionConfig, request):
    """The request of each shard, writing beside the stage's directory (round-1/generations.shards/0-of-2, ...),
    with the prompt files by absolute path: a Ray worker runs in the directory its node was started in."""
    folder, count = request.out.with_name(f"{request.out.name}.shards"), execution.shards
    paths = {"train_prompts": request.data.train_prompts, "eval_prompts": request.data.eval_prompts}
    data = request.data.model_copy(update={name: str(Path(path).resolve()) for name, path in paths.items()})
    return [
        request.model_copy(update={"shard": Shard(i, count), "out": folder / f"{i}-of-{count}", "data": data})
        for i in range(count)
    ]

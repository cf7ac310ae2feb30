"""Generate and judge in shards: each shard a Prefect task (on a Ray cluster when `execution.engine` is ray), the
shards merged in shard order into what the unsharded stage writes.

Each shard task is cached like a stage and writes its own directory atomically, so a shard that fails is retried on
its own, and a re-run of the round skips the shards that finished.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.task_runners import TaskRunner

from components import stages
from components.config import ExecutionConfig, StageResources
from components.requests import GenerateRequest, JudgeRequest, Shard
from flows.caching import STAGE, fresh

# What a task on a Ray worker needs to report to Prefect and MLflow. Ray's workers are started by `ray start`, not by
# this process, so they do not inherit its environment (Prefect issue #18485: no PREFECT_API_URL on remote workers).
# Secrets (PREFECT_API_AUTH_STRING, MLFLOW_TRACKING_PASSWORD) are not passed: Ray shows a job's runtime_env in its
# dashboard, so they belong in the environment of `ray start` on each node (docs/scaling.md).
FORWARDED = (
    "PREFECT_API_URL",
    "PREFECT_CLIENT_RETRY_EXTRA_CODES",
    "PREFECT_LOGGING_EXTRA_LOGGERS",
    "MLFLOW_TRACKING_URI",
    "HF_HUB_OFFLINE",
)


def sharded(execution: ExecutionConfig) -> bool:
    """Whether generate and judge run as shard tasks: on a cluster always (there they need the task runner), and
    in this process when more than one shard is asked for."""
    return execution.engine == "ray" or execution.shards > 1


def task_runner(execution: ExecutionConfig) -> TaskRunner | None:
    """The round's task runner: Ray's for `engine: ray` (None keeps Prefect's default thread pool)."""
    if execution.engine != "ray":
        return None
    from prefect.settings import get_current_settings
    from prefect_ray import RayTaskRunner

    settings = get_current_settings()
    env = {name: os.environ[name] for name in FORWARDED if name in os.environ}
    if settings.api.url:  # `ratchet run`'s temporary server is a setting, not a variable
        env["PREFECT_API_URL"] = settings.api.url
    # Where the shard tasks' cached results are: one place for every node if it is on a shared mount.
    env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(settings.results.local_storage_path)
    return RayTaskRunner(address=execution.address, init_kwargs={"runtime_env": {"env_vars": env}})


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
    """Each shard task's result, in shard order: all at once on Ray; one after another in this process, because
    model loads in threads of one process raced in transformers here (a model loaded later in the process came out
    with its weights on the meta device)."""
    if execution.engine != "ray":
        return [shard_task(request) for shard_task, request in calls]
    from prefect_ray.context import remote_options

    memory = {"memory": int(resources.memory_gb * 2**30)} if resources.memory_gb else {}
    with remote_options(num_cpus=resources.cpus, num_gpus=resources.gpus, **memory):
        futures = [shard_task.submit(request) for shard_task, request in calls]
    return [future.result() for future in futures]


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

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
from components.config import DataConfig, ExecutionConfig, StageResources
from components.models import Policy
from flows.caching import STAGE

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


def generate(execution: ExecutionConfig, models, data, generation, champion: Policy, out: str, seed: int):
    """The generate stage as `execution.shards` shard tasks, merged in shard order."""
    data = _absolute(data)
    calls = [
        (_fresh(generate_shard, path), (models, data, generation, champion, path, seed, shard))
        for shard, path in _shards(execution, out)
    ]
    return _fresh(merge_generated, out)(_run(execution, execution.generate, calls), out)


def judge(execution: ExecutionConfig, models, data, judge_config, pairs_config, champion, generations, out, gold):
    """The judge stage as `execution.shards` shard tasks, merged in shard order; the gold pairs join at the merge."""
    data = _absolute(data)
    calls = [
        (_fresh(judge_shard, path), (models, data, judge_config, pairs_config, champion, generations, path, shard))
        for shard, path in _shards(execution, out)
    ]
    return _fresh(merge_judged, out)(_run(execution, execution.judge, calls), out, gold)


def _run(execution: ExecutionConfig, resources: StageResources, calls: list) -> list:
    """Each shard task's result, in shard order: all at once on Ray; one after another in this process, because
    model loads in threads of one process raced in transformers here (a model loaded later in the process came out
    with its weights on the meta device)."""
    if execution.engine != "ray":
        return [shard_task(*args) for shard_task, args in calls]
    from prefect_ray.context import remote_options

    memory = {"memory": int(resources.memory_gb * 2**30)} if resources.memory_gb else {}
    with remote_options(num_cpus=resources.cpus, num_gpus=resources.gpus, **memory):
        futures = [shard_task.submit(*args) for shard_task, args in calls]
    return [future.result() for future in futures]


@task(**STAGE, retries=2, retry_delay_seconds=5, task_run_name="generate-shard-{shard.index}")
def generate_shard(models, data, generation, champion, out: str, seed: int, shard: stages.Shard) -> stages.Generated:
    _say_where(shard)
    return stages.generate(models, data, generation, champion, Path(out), seed, shard)


@task(**STAGE, retries=2, retry_delay_seconds=5, task_run_name="judge-shard-{shard.index}")
def judge_shard(models, data, judge_config, pairs_config, champion, generations, out, shard) -> stages.Judged:
    _say_where(shard)
    return stages.judge(models, data, judge_config, pairs_config, champion, generations, Path(out), None, shard)


def _say_where(shard: stages.Shard) -> None:
    import ray

    node = f"Ray node {ray.get_runtime_context().get_node_id()}" if ray.is_initialized() else "the flow's process"
    get_run_logger().info("shard %d of %d runs on %s", shard.index + 1, shard.count, node)


@task(**STAGE, name="generate")
def merge_generated(shards: list[stages.Generated], out: str) -> stages.Generated:
    return stages.merge_generated(shards, Path(out))


@task(**STAGE, name="judge")
def merge_judged(shards: list[stages.Judged], out: str, gold: str) -> stages.Judged:
    return stages.merge_judged(shards, Path(out), gold)


def _fresh(stage_task, out: str):
    """The task, told to recompute when its output directory is gone: its cached result would name a missing path."""
    return stage_task.with_options(refresh_cache=not Path(out).exists())


def _shards(execution: ExecutionConfig, out: str) -> list[tuple[stages.Shard, str]]:
    """Each shard and its directory, beside the stage's: round-1/generations.shards/0-of-2, ..."""
    folder = Path(out).with_name(f"{Path(out).name}.shards")
    count = execution.shards
    return [(stages.Shard(i, count), str(folder / f"{i}-of-{count}")) for i in range(count)]


def _absolute(data: DataConfig) -> DataConfig:
    """The prompt files by absolute path: a Ray worker runs in the directory its node was started in."""
    paths = {"train_prompts": data.train_prompts, "eval_prompts": data.eval_prompts}
    return data.model_copy(update={name: str(Path(path).resolve()) for name, path in paths.items()})

"""Where a round's shard tasks run (`execution.engine`): in the flow's own process, one after another, or on a Ray
cluster, all at once. The one place in flows/ that chooses by a config kind: an engine is a Prefect task runner,
which components/build.py and build_judges.py, where every other kind is chosen, cannot import.
"""

from __future__ import annotations

import os
from typing import Protocol

from prefect.task_runners import TaskRunner

from components.config.experiment import ExecutionConfig, StageResources

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


class Engine(Protocol):
    sharded: bool  # whether generate and judge run as shard tasks

    def task_runner(self) -> TaskRunner | None:
        """The round's task runner (None keeps Prefect's default thread pool)."""

    def run(self, resources: StageResources, calls: list) -> list:
        """Each (task, request) call's result, in order."""


class InProcess:
    """One shard after another in the flow's process: model loads in threads of one process raced in transformers
    here (a model loaded later in the process came out with its weights on the meta device). Sharded only when more
    than one shard is asked for."""

    def __init__(self, execution: ExecutionConfig):
        self.sharded = execution.shards > 1

    def task_runner(self) -> None:
        return None

    def run(self, resources: StageResources, calls: list) -> list:
        return [shard_task(request) for shard_task, request in calls]


class RayCluster:
    """Every shard at once on a Ray cluster, each asking for its stage's resources; always sharded, since there the
    tasks need the task runner."""

    sharded = True

    def __init__(self, execution: ExecutionConfig):
        self.address = execution.address

    def task_runner(self) -> TaskRunner:
        from prefect.settings import get_current_settings
        from prefect_ray import RayTaskRunner

        settings = get_current_settings()
        env = {name: os.environ[name] for name in FORWARDED if name in os.environ}
        if settings.api.url:  # `ratchet run`'s temporary server is a setting, not a variable
            env["PREFECT_API_URL"] = settings.api.url
        # Where the shard tasks' cached results are: one place for every node if it is on a shared mount.
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(settings.results.local_storage_path)
        return RayTaskRunner(address=self.address, init_kwargs={"runtime_env": {"env_vars": env}})

    def run(self, resources: StageResources, calls: list) -> list:
        from prefect_ray.context import remote_options

        memory = {"memory": int(resources.memory_gb * 2**30)} if resources.memory_gb else {}
        with remote_options(num_cpus=resources.cpus, num_gpus=resources.gpus, **memory):
            futures = [shard_task.submit(request) for shard_task, request in calls]
        return [future.result() for future in futures]


def engine_for(execution: ExecutionConfig) -> Engine:
    """The engine `execution.engine` names."""
    match execution.engine:
        case "ray":
            return RayCluster(execution)
        case "local":
            return InProcess(execution)

"""Training under `accelerate launch` (`training.launcher: accelerate`): the train stage in `num_processes`
processes, data parallel. With no accelerate config file it is plain DDP, over NCCL on GPUs and gloo on CPUs
(accelerate's multi-process launcher, torchrun, picks by what torch sees); a config file from `accelerate config`
makes it FSDP, DeepSpeed or several machines instead.

The parent (`launch`) writes the stage's inputs to request.json and waits; every process runs `main`, which trains
through the same `stages.train_adapter` as in-process training; TRL's trainer splits each global batch over the
processes, and rank 0 saves the adapter and writes the metrics.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from pydantic import TypeAdapter

from components.config import DataConfig, ModelsConfig, TrainingConfig
from components.judge_config import JudgeConfig
from components.models import Policy
from components.process_group import free_port, run_group


def launch(
    models: ModelsConfig,
    data: DataConfig,
    training: TrainingConfig,
    judge_config: JudgeConfig,
    champion: Policy,
    generations: str,
    pairs: str,
    out: Path,
    seed: int,
    checkpoints: Path,
    reward_model: str | None = None,
) -> dict:
    """Train the adapter into `out` under `accelerate launch`; the metrics rank 0 wrote."""
    with tempfile.TemporaryDirectory(prefix="ratchet-train-") as tmp:
        request, metrics = Path(tmp) / "request.json", Path(tmp) / "metrics.json"
        plain = {"models": models, "data": data, "training": training, "judge_config": judge_config}
        request.write_text(
            json.dumps(
                {name: value.model_dump(mode="json") for name, value in plain.items()}
                | {"champion": [champion.base, list(champion.adapters)], "generations": generations, "pairs": pairs}
                | {"out": str(out), "seed": seed, "checkpoints": str(checkpoints), "metrics": str(metrics)}
                | {"reward_model": reward_model}
            )
        )
        command = [sys.executable, "-m", "accelerate.commands.launch", *_launch_options(training)]
        command += ["-m", "components.train_worker", str(request)]
        run_group(command, "accelerate launch", env=os.environ | {"ACCELERATE_LOG_LEVEL": "warning"})
        return json.loads(metrics.read_text())


def _launch_options(training: TrainingConfig) -> list[str]:
    options = ["--num_processes", str(training.num_processes), "--main_process_port", str(free_port())]
    if training.accelerate_config:
        return ["--config_file", training.accelerate_config, *options]
    # No config file: every default named, so accelerate does not warn about each one it had to pick.
    options += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return ["--multi_gpu", *options] if training.num_processes > 1 else options


def main(request_path: str) -> None:
    from components.stages import train_adapter

    r = json.loads(Path(request_path).read_text())
    metrics = train_adapter(
        ModelsConfig.model_validate(r["models"]),
        DataConfig.model_validate(r["data"]),
        TypeAdapter(TrainingConfig).validate_python(r["training"]),
        TypeAdapter(JudgeConfig).validate_python(r["judge_config"]),
        Policy(r["champion"][0], tuple(r["champion"][1])),
        r["generations"],
        r["pairs"],
        Path(r["out"]),
        r["seed"],
        Path(r["checkpoints"]),
        r["reward_model"],
    )
    if int(os.environ.get("RANK", "0")) == 0:
        Path(r["metrics"]).write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1])

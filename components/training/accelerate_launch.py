"""The train stage under `accelerate launch` (`training.launcher: accelerate`): `num_processes` processes, data
parallel. With no accelerate config file it is plain DDP, over NCCL on GPUs and gloo on CPUs (accelerate's
multi-process launcher, torchrun, picks by what torch sees); a config file from `accelerate config` makes it FSDP,
DeepSpeed or several machines instead.

`launch` writes the stage's request to request.json and waits; every process runs train_worker.py, which reads it
back whole and trains through the same `build.train_adapter` as in-process training; TRL's trainer splits each global
batch over the processes, and rank 0 saves the adapter and writes the metrics.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from components.config.experiment import TrainingConfig
from components.process_group import free_port, run_group
from components.requests import TrainRequest


def launch(request: TrainRequest, into: Path) -> dict:
    """Train the adapter into `into` under `accelerate launch`; the metrics rank 0 wrote."""
    with tempfile.TemporaryDirectory(prefix="ratchet-train-") as tmp:
        written, metrics = Path(tmp) / "request.json", Path(tmp) / "metrics.json"
        written.write_text(request.model_dump_json())
        command = [sys.executable, "-m", "accelerate.commands.launch", *_launch_options(request.training)]
        command += ["-m", "components.train_worker", str(written), str(into), str(metrics)]
        run_group(command, "accelerate launch", env=os.environ | {"ACCELERATE_LOG_LEVEL": "warning"})
        return json.loads(metrics.read_text())


def _launch_options(training: TrainingConfig) -> list[str]:
    options = ["--num_processes", str(training.num_processes), "--main_process_port", str(free_port())]
    if training.accelerate_config:
        return ["--config_file", training.accelerate_config, *options]
    # No config file: every default named, so accelerate does not warn about each one it had to pick.
    options += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return ["--multi_gpu", *options] if training.num_processes > 1 else options

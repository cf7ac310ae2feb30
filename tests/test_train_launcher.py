"""`training.launcher: accelerate` for real: the train stage under `accelerate launch`, 1 process against 2 (DDP
over gloo on this CPU) with the same global batch, on the tiny model."""

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import PAIRS

from components.config.experiment import DataConfig, DPOTrainingConfig, ModelsConfig
from components.config.judges import VerifierJudgeConfig
from components.data import save_rows
from components.models import Policy
from components.requests import TrainRequest
from components.stages import train

# The tolerance of 2 processes against 1: the same examples make each global batch, and DDP averages the two
# halves' gradients, so only float summation order differs.
# Measured: 4e-7 at most, on weights up to 0.13.
TOLERANCE = 1e-5


def train_with(tiny_model_dir, tmp_path, processes: int, per_device: int):
    pairs = tmp_path / "pairs"
    save_rows(PAIRS, pairs)
    training = DPOTrainingConfig(
        launcher="accelerate",
        num_processes=processes,
        per_device_train_batch_size=per_device,
        num_train_epochs=3,
        learning_rate=1e-3,
        lora_dropout=0.0,
    )
    out = tmp_path / f"adapter-{processes}"
    request = TrainRequest(
        models=ModelsConfig(device="cpu"),
        data=DataConfig(),
        training=training,
        judge=VerifierJudgeConfig(),
        champion=Policy(tiny_model_dir),
        generations="",
        pairs=str(pairs),
        decided_pairs=len(PAIRS) - 1,
        out=out,
        seed=0,
    )
    trained = train(request)  # accelerate launch reads the request back whole from JSON
    return trained.metrics, load_file(str(out / "adapter_model.safetensors"))


@pytest.mark.slow  # two accelerate launches, ~1 min
def test_two_processes_train_what_one_does_with_the_same_global_batch(tiny_model_dir, tmp_path):
    one, one_weights = train_with(tiny_model_dir, tmp_path, processes=1, per_device=4)
    two, two_weights = train_with(tiny_model_dir, tmp_path, processes=2, per_device=2)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["steps"] == two["steps"] == 6  # 8 pairs, global batch 4, 3 epochs
    assert two["loss_last"] < two["loss_first"]
    assert abs(one["loss_last"] - two["loss_last"]) < TOLERANCE
    assert one_weights.keys() == two_weights.keys()
    assert max((one_weights[k] - two_weights[k]).abs().max().item() for k in one_weights) < TOLERANCE
    assert any(torch.count_nonzero(w) for w in two_weights.values())

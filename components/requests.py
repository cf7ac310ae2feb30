"""What a stage is asked to do: one frozen, typed request per stage, built from the config by components/build.py
and passed whole to the stage (`stages.train(request) -> Trained`). Training under `accelerate launch` writes it
as JSON and each process reads it back whole (train_worker.py)."""

from __future__ import annotations

from pathlib import Path

from components.config import DataConfig, ModelsConfig, TrainingConfig
from components.judge_config import JudgeConfig
from components.models import Policy
from components.strict import Strict


class TrainRequest(Strict):
    """Train a fresh LoRA adapter on the champion into `out`."""

    models: ModelsConfig
    data: DataConfig  # the training prompts, for GRPO/RLOO's online samples
    training: TrainingConfig
    judge: JudgeConfig  # GRPO/RLOO's reward with `reward: judge`
    champion: Policy  # the model trained, and DPO's reference
    generations: str  # the round's samples: the judge reward's anchor answers
    pairs: str  # the judged pairs, DPO's data
    decided_pairs: int  # pairs the judge did not abstain on: DPO has nothing to learn without one
    out: Path
    seed: int
    reward_model: str | None = None  # the round's reward model's directory, for `reward: reward_model`

    @property
    def checkpoints(self) -> Path:
        """Beside the output, so a killed run resumes from the last one."""
        return self.out.parent / f".{self.out.name}.checkpoints"

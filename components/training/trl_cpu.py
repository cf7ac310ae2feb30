"""TRL on a CPU: where its defaults assume an accelerator and a CPU can do less work for the same result."""

from __future__ import annotations

import torch


def score_only_labelled_positions() -> None:
    """TRL 1.16's fused LM head (DPO, GRPO, RLOO) projects only the positions that carry a label where Triton runs,
    and every position elsewhere, so that a compiler (Neuron, XLA) sees one tile shape per batch. Eager torch on a
    CPU has no shapes to keep, and there the prompt and padding positions cost a quarter of a DPO step on SmolLM2
    (3 steps of 8 pairs at 320 tokens: 110.6 s, 82.7 s without them) and most of the tiny test model's. TRL reads
    the choice from `trl.trainer.utils._use_triton` on every forward (its kernels keep their own, so the tiles stay
    torch); the log-probs are the same either way (tests/test_trainer.py)."""
    import trl.trainer.utils as trl_utils

    choose = getattr(trl_utils, "_use_triton", None)
    if choose is None or getattr(choose, "labelled_only_on_cpu", False):
        return  # another TRL: its own choice stands

    def compact(device: torch.device) -> bool:
        return device.type == "cpu" or choose(device)

    compact.labelled_only_on_cpu, compact.trl_choice = True, choose
    trl_utils._use_triton = compact

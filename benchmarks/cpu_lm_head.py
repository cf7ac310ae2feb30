"""DPO on SmolLM2 with TRL's fused LM head as TRL runs it on a CPU (every position scored) and as Ratchet runs it
(only the labelled positions: `components.training.trl_cpu.score_only_labelled_positions`), side by side in one run.

    .venv/bin/python benchmarks/cpu_lm_head.py [--steps 3] [--repeats 1]

Each variant trains in a process of its own through Ratchet's DPO trainer, on the same 64 pairs (the shipped
training prompts, answers of 36-130 tokens), 8 pairs a step at `max_length` 320 as configs/efficacy.yaml trains.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from own_process import print_result, run_variants  # noqa: E402

MODEL = "smollm2-135m-instruct"
VARIANTS = ["every position (TRL on CPU)", "labelled positions (Ratchet)"]


def pairs() -> list[dict]:
    from components.data import load_prompts, user_message

    return [
        {
            "prompt": user_message(row),
            "chosen": "Here is a direct answer that follows every instruction in the request. " * (3 + i % 5),
            "rejected": "I am sorry, but I would rather not answer this request, as I am unsure. " * (2 + i % 7),
            "abstained": False,
        }
        for i, row in enumerate(load_prompts(ROOT / "data/train.jsonl", 64))
    ]


def worker(variant: str, steps: int) -> None:
    import torch
    import trl.trainer.utils as trl_utils
    from datasets import Dataset

    from components.config.experiment import DPOTrainingConfig, ModelsConfig
    from components.models import Policy, load_tokenizer
    from components.training import trainer

    if variant == VARIANTS[0]:  # Ratchet's run_training would switch it on: keep TRL's own choice
        trainer.score_only_labelled_positions = lambda: None
        assert not trl_utils._use_triton(torch.device("cpu"))
    config = DPOTrainingConfig(max_steps=steps, per_device_train_batch_size=8, max_length=320, save_steps=10_000)
    models = ModelsConfig(device="cpu")
    torch.manual_seed(0)
    model = trainer.load_for_training(Policy(MODEL), config, models)
    with tempfile.TemporaryDirectory() as tmp:
        dpo = trainer.DPOLoRATrainer(model, load_tokenizer(MODEL), config, models, 0, Path(tmp) / "checkpoints")
        metrics = dpo.train(Dataset.from_list(pairs()), Path(tmp) / "adapter")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print_result({"seconds": metrics["seconds"], "tokens": metrics["tokens"], "peak_gib": peak})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", choices=VARIANTS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    runs = run_variants(__file__, VARIANTS, args.repeats, "--steps", str(args.steps))
    print(
        f"\n{date.today()} · {platform.machine()} · {args.repeats} x {args.steps} DPO steps of 8 pairs, SmolLM2-135M\n"
    )
    print("| LM head scores | s per step | tokens | peak RSS (GiB) | vs TRL on CPU |")
    print("|---|---|---|---|---|")
    base = statistics.median(r["seconds"] for r in runs[VARIANTS[0]])
    for variant, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = max(r["peak_gib"] for r in results)
        row = [variant, f"{seconds / args.steps:.1f}", f"{results[0]['tokens']:.0f}", f"{peak:.2f}"]
        print("| " + " | ".join(row) + f" | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()

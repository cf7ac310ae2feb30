"""Ratchet's DPO trainer vs a plain TRL script: same model, pairs and settings; LoRA and QLoRA; one run.

    .venv/bin/python benchmarks/train_vs_trl.py [--repeats 2] [--steps 4]

Each variant trains in its own process (so peak RSS is that variant's alone), the variants alternate, and the
medians over repeats are compared as ratios. Throughput is tokens seen by the trainer / wall time of train().
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from own_process import print_result, run_variants  # noqa: E402

MODEL = "smollm2-135m-instruct"
VARIANTS = ["ratchet-lora", "trl-lora", "ratchet-qlora", "trl-qlora"]


def pairs(n: int = 16) -> list[dict]:
    """~100-token pairs on the shipped training prompts: a direct answer vs a padded refusal."""
    from components.data import load_prompts, user_message

    rows = []
    for row in load_prompts(ROOT / "data/train.jsonl", n):
        rows.append(
            {
                "prompt": user_message(row),
                "chosen": "Here is a direct answer that follows every instruction in the request. " * 3,
                "rejected": "I am sorry, but I would rather not answer this request, as I am unsure about it. " * 3,
                "abstained": False,
            }
        )
    return rows


def run_ratchet(quantized: bool, steps: int, out: Path) -> dict:
    from datasets import Dataset

    from components.config.experiment import DPOTrainingConfig, ModelsConfig
    from components.models import Policy, load_tokenizer
    from components.training.trainer import DPOLoRATrainer, load_for_training

    cfg = DPOTrainingConfig(max_steps=steps, per_device_train_batch_size=4, load_in_4bit=quantized, save_steps=10_000)
    models = ModelsConfig(device="cpu")
    model = load_for_training(Policy(MODEL), cfg, models)
    trainer = DPOLoRATrainer(model, load_tokenizer(MODEL), cfg, models, 0, out.parent / f"{out.name}-checkpoints")
    metrics = trainer.train(Dataset.from_list(pairs()), out)
    return {"tokens": metrics["tokens"], "seconds": metrics["seconds"]}


def run_plain_trl(quantized: bool, steps: int, out: Path) -> dict:
    """What a user would write from TRL's and PEFT's docs, with the same hyper-parameters as Ratchet's defaults."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer

    from components.models import resolve_model

    path = resolve_model(MODEL)
    if quantized:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map="cpu")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": p["prompt"]}],
                "chosen": [{"role": "assistant", "content": p["chosen"]}],
                "rejected": [{"role": "assistant", "content": p["rejected"]}],
            }
            for p in pairs()
        ]
    )
    args = DPOConfig(
        output_dir=str(out / "ckpt"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-5,
        beta=0.1,
        max_length=256,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e][-1]
    return {"tokens": tokens, "seconds": seconds}


def worker(variant: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = run_ratchet if variant.startswith("ratchet") else run_plain_trl
        result = run(variant.endswith("qlora"), steps, Path(tmp))
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--worker", choices=VARIANTS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    runs = run_variants(__file__, VARIANTS, args.repeats, "--steps", str(args.steps))
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in ("tokens", "seconds", "peak_rss_gib")}
        for v, rs in runs.items()
    }
    print(
        f"\n{date.today()} · {platform.processor() or platform.machine()} · {args.repeats} repeats x {args.steps} "
        f"DPO steps of 4 pairs, SmolLM2-135M, LoRA r16 all-linear\n"
    )
    print("| variant | tokens/s | peak RSS (GiB) | tokens/s vs TRL | peak RSS vs TRL |")
    print("|---|---|---|---|---|")
    for kind in ("lora", "qlora"):
        ours, theirs = med[f"ratchet-{kind}"], med[f"trl-{kind}"]
        for name, m in ((f"ratchet-{kind}", ours), (f"trl-{kind}", theirs)):
            speed, base = m["tokens"] / m["seconds"], theirs["tokens"] / theirs["seconds"]
            print(
                f"| {name} | {speed:.1f} | {m['peak_rss_gib']:.2f} | {speed / base:.2f}x | "
                f"{m['peak_rss_gib'] / theirs['peak_rss_gib']:.2f}x |"
            )


if __name__ == "__main__":
    main()

"""Reward evaluations per second for online RL (issue 26): the reward model against calling a judge in both orders,
on the same samples, side by side in one run.

    .venv/bin/python benchmarks/reward_vs_judge.py [--samples 32] [--no-qwen]

The samples are the answers of the judge calibration set (data/judge_calibration.jsonl). First a reward model is
trained on SmolLM2-135M from the calibration pairs of half the categories' rows (a few steps; the speed of scoring
does not depend on how well it was trained, and its accuracy on the other half is printed beside it). Then each
reward source scores the same `--samples` answers as GRPO's reward would: the reward model one forward pass per
answer; a judge the answer against an anchor (the pair's other answer), in both orders, as `JudgeReward` does.
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.build_judges import make_judge  # noqa: E402
from components.config.experiment import ModelsConfig, RewardModelConfig  # noqa: E402
from components.config.judges import AIJudgeConfig  # noqa: E402
from components.data import user_message  # noqa: E402
from components.evaluation.measures import mean_ci  # noqa: E402
from components.judge_check import load_calibration  # noqa: E402
from components.models import Policy  # noqa: E402
from components.training.reward_model import RewardModel, quality, train_reward_model  # noqa: E402
from components.training.rewards import JudgeReward  # noqa: E402

POLICY = "smollm2-135m-instruct"
CPU = ModelsConfig(device="cpu")


def as_pairs(rows: list[dict]) -> list[dict]:
    return [
        {
            "prompt_id": r["id"],
            "prompt": user_message(r),
            "chosen": r["better"],
            "rejected": r["worse"],
            "judge": "gold",
        }
        for r in rows
    ]


def timed(name: str, score, n: int) -> dict:
    started = time.perf_counter()
    values = score()
    seconds = time.perf_counter() - started
    assert len(values) == n
    return {"source": name, "samples": n, "seconds": seconds, "per_second": n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--no-qwen", action="store_true", help="skip the Qwen2.5-Coder-1.5B judge (llama.cpp)")
    args = parser.parse_args()
    rows = load_calibration()
    train, heldout = rows[0::2], rows[1::2]
    samples = heldout[: args.samples]
    requests = [user_message(r) for r in samples]
    answers = [r["better"] if i % 2 else r["worse"] for i, r in enumerate(samples)]
    with tempfile.TemporaryDirectory() as tmp:
        config = RewardModelConfig(max_steps=20, per_device_train_batch_size=8, learning_rate=5e-4)
        train_reward_model(config, CPU, as_pairs(train), Path(tmp) / "rm", Path(tmp) / "ckpt", 0)
        model = RewardModel.load(Path(tmp) / "rm", POLICY, CPU)
        accuracy = quality(model, as_pairs(heldout), [], {}, lambda v: mean_ci(v, 0.95, 1000))["rm_heldout_accuracy"]
        name = "reward model (SmolLM2-135M + LoRA head), 1 pass per sample"
        results = [timed(name, lambda: model.score(requests, answers), len(answers))]
    judges = {"SmolLM2-135M judge, prefilled, both orders": AIJudgeConfig(model=POLICY, prompt_style="chat")}
    if not args.no_qwen:
        judges["Qwen2.5-Coder-1.5B judge (llama.cpp), pointwise"] = AIJudgeConfig(
            model="qwen2.5-coder-1.5b-instruct", runtime="llama_cpp", verdict="pointwise", prompt_style="chat"
        )
        judges["Qwen2.5-Coder-1.5B judge (llama.cpp), prefilled, both orders"] = AIJudgeConfig(
            model="qwen2.5-coder-1.5b-instruct", runtime="llama_cpp", prompt_style="chat"
        )
    ids = [r["id"] for r in samples]
    for name, judge_config in judges.items():
        judge = make_judge(judge_config, Policy(POLICY), CPU)
        anchors = {r["id"]: (r["worse"] if i % 2 else r["better"]) for i, r in enumerate(samples)}
        prompts = [{**r, "check": ""} for r in samples]  # the AI judge, not the verifier, for every sample
        reward = JudgeReward(judge, prompts, anchors)
        results.append(timed(name, lambda reward=reward: reward(None, answers, prompt_id=ids), len(answers)))
    fastest_judge = max(r["per_second"] for r in results[1:])
    print(f"\n`{' '.join(sys.argv)}`, {date.today()}, {platform.machine()}, {os.cpu_count()} cores.")
    print(f"Reward model held-out accuracy on the other {len(heldout)} calibration pairs: {accuracy:.1%}\n")
    print("| reward source | samples | seconds | samples/s | vs the fastest judge |\n|---|---|---|---|---|")
    for r in results:
        ratio = r["per_second"] / fastest_judge
        print(f"| {r['source']} | {r['samples']} | {r['seconds']:.1f} | {r['per_second']:.2f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()

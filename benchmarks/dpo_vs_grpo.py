"""DPO against GRPO at equal CPU time: one round each from the same champion on the same prompts (issue 27).

    .venv/bin/python benchmarks/dpo_vs_grpo.py [--config configs/efficacy.yaml] [--train-prompts 128] [--eval-prompts N]

DPO's round costs its sampling, judging and training: `samples_per_prompt` answers per prompt, each prompt's best
against its worst by the config's training judge, DPO on those pairs. GRPO samples inside its training, so it gets
those same seconds as its budget (`training.max_seconds`), with the same judge as its reward: the verifier's graded
score where a prompt has a check (RLVR), the refusal classifier against the DPO round's first sample elsewhere. Both
use the config's learning rate, LoRA and token cap; GRPO's group is `samples_per_prompt` samples, 2 prompts a step.
Both adapters are then evaluated as a round's evaluate stage does, on every held-out prompt, with the verifier as
the evaluation judge (so no AI judge's time is in the comparison): greedy task completion against the champion with
paired CIs, per cohort, benign refusals, length, and KL per token from the champion.
The training prompts (and, with --eval-prompts, the held-out ones) are an evenly spaced subset of the config's, so
every cohort is in it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components import stages  # noqa: E402
from components.config.experiment import OnlineTrainingConfig  # noqa: E402
from components.config.judges import VerifierJudgeConfig  # noqa: E402
from components.config.loading import load_config  # noqa: E402
from components.data import load_prompts  # noqa: E402
from components.evaluate_stage import evaluate  # noqa: E402
from components.models import Policy  # noqa: E402
from components.requests import evaluate_request, generate_request, judge_request, train_request  # noqa: E402

GRPO_PROMPTS_PER_STEP = 2


def subset(path: str, n: int, out: Path) -> Path:
    """Every k-th prompt of the file, n in all."""
    prompts = load_prompts(path)
    step = max(len(prompts) // n, 1)
    out.write_text("".join(json.dumps(row) + "\n" for row in prompts.select(range(0, len(prompts), step)[:n])))
    return out


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, round(time.perf_counter() - started, 1)


def grpo_config(cfg, seconds: float) -> OnlineTrainingConfig:
    dpo, sampling = cfg.training, cfg.generation
    return OnlineTrainingConfig(
        kind="grpo",
        learning_rate=dpo.learning_rate,
        lora_r=dpo.lora_r,
        lora_alpha=dpo.lora_alpha,
        num_generations=sampling.samples_per_prompt,
        per_device_train_batch_size=GRPO_PROMPTS_PER_STEP * sampling.samples_per_prompt,
        max_completion_length=sampling.max_new_tokens,
        temperature=sampling.temperature,
        num_train_epochs=1,
        max_seconds=seconds,
        save_steps=10_000,
    )


def run(cfg, work: Path) -> list[dict]:
    """Both arms, then both evaluations; one summary row per method."""
    champion, data, seed = Policy(cfg.models.policy), cfg.data, cfg.seed

    def train(training, name: str, generated, judged):
        with_training = cfg.model_copy(update={"training": training})
        return stages.train(train_request(with_training, champion, generated.path, judged, work / name, seed, None))

    generated, gen_s = timed(lambda: stages.generate(generate_request(cfg, champion, work / "gen", seed)))
    judged, judge_s = timed(
        lambda: stages.judge(judge_request(cfg, champion, generated.path, work / "pairs", None, None))
    )
    dpo, dpo_s = timed(lambda: train(cfg.training, "dpo", generated, judged))
    grpo_training = grpo_config(cfg, gen_s + judge_s + dpo_s)
    grpo, grpo_s = timed(lambda: train(grpo_training, "grpo", generated, judged))

    evaluation = cfg.evaluation.model_copy(update={"judge": VerifierJudgeConfig(), "self_agreement": False})
    evaluated_by = cfg.model_copy(update={"evaluation": evaluation})
    n_prompts = len(load_prompts(data.train_prompts))
    rows = []
    for method, trained, seconds in (("dpo", dpo, grpo_training.max_seconds), ("grpo", grpo, grpo_s)):
        challenger = champion.with_adapter(trained.path)
        started = time.perf_counter()
        evaluated = evaluate(
            evaluate_request(evaluated_by, champion, challenger, work / f"eval-{method}", work / "memo")
        )
        eval_s = round(time.perf_counter() - started, 1)
        if method == "dpo":
            seen = {"prompts": n_prompts, "pairs": judged.pairs - judged.abstained}
        else:
            steps = trained.metrics["steps"]
            seen = {
                "prompts": steps * GRPO_PROMPTS_PER_STEP,
                "samples_scored": steps * grpo_training.per_device_train_batch_size,
            }
        rows.append(
            {
                "method": method,
                "round_seconds": seconds,
                **seen,
                **outcome(trained.metrics, evaluated.metrics),
                "eval_seconds": eval_s,
            }
        )
    return rows


def outcome(train: dict, found: dict) -> dict:
    keys = (
        "task/task_completion_delta",
        "task/task_completion_delta_ci_low",
        "task/task_completion_delta_ci_high",
        "task/task_completion_delta.ifeval",
        "task/task_completion_delta.ifeval_unseen",
        "task/champion_task_completion",
        "task/challenger_task_completion",
        "refusal/benign_refusal_delta",
        "length/length_ratio",
        "drift/kl_per_token",
    )
    return {"steps": train["steps"], "train_seconds": train["seconds"]} | {k: found.get(k) for k in keys}


def table(rows: list[dict]) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def pts(v):
        return "n/a" if v is None or math.isnan(v) else f"{v:+.1f}"

    lines = [
        "| method | CPU s (round) | prompts sampled | pairs / samples scored | steps | KL / token "
        "| task completion | Δ vs champion (95% CI) | Δ ifeval | Δ ifeval_unseen | benign refusal Δ | length ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scored = f"{r['pairs']} pairs" if "pairs" in r else f"{r['samples_scored']} samples"
        lines.append(
            f"| {r['method']} | {r['round_seconds']:.0f} | {r['prompts']} | {scored} | {r['steps']} "
            f"| {r['drift/kl_per_token']:.4f} "
            f"| {pct(r['task/champion_task_completion'])} → {pct(r['task/challenger_task_completion'])} "
            f"| {pts(r['task/task_completion_delta'])} ({pts(r['task/task_completion_delta_ci_low'])} to "
            f"{pts(r['task/task_completion_delta_ci_high'])}) | {pts(r['task/task_completion_delta.ifeval'])} "
            f"| {pts(r['task/task_completion_delta.ifeval_unseen'])} | {pts(r['refusal/benign_refusal_delta'])} "
            f"| {r['length/length_ratio']:.2f} |"
        )
    return "\n".join(lines)


def configure(description: str, prefix: str, extra=None) -> tuple[argparse.Namespace, object, Path]:
    """The comparison scripts' shared options: (the arguments, the config on the prompt subsets, the workdir)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="configs/efficacy.yaml")
    parser.add_argument("--train-prompts", type=int, default=128)
    parser.add_argument("--eval-prompts", type=int, default=None, help="a subset of the held-out prompts (default all)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the stage outputs here (default: a temp dir)")
    if extra:
        extra(parser)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config)
    train = subset(base.data.train_prompts, args.train_prompts, work / "train.jsonl")
    overrides = {"data.train_prompts": str(train), "workdir": str(work)}
    if args.eval_prompts:
        overrides["data.eval_prompts"] = str(subset(base.data.eval_prompts, args.eval_prompts, work / "heldout.jsonl"))
    return args, load_config(args.config, overrides), work


def main() -> None:
    args, cfg, work = configure(__doc__.splitlines()[0], "dpo-vs-grpo-")
    rows = run(cfg, work)
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    print(
        f"{date.today()} · {platform.processor() or platform.machine()} · config {args.config}, "
        f"{args.train_prompts} training prompts · outputs in {work}"
    )
    print(table(rows))


if __name__ == "__main__":
    main()

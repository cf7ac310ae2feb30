"""Which RLAIF path works best here (issue 26): one round each, from the same champion on the same prompts, at equal
CPU time: DPO on the judged pairs, a reward model with GRPO against it, and critique-and-revise pairs with DPO.

    .venv/bin/python benchmarks/rlaif_paths.py [--config configs/efficacy.yaml] [--train-prompts 128]
        [--eval-prompts N] [--reviser self]

The DPO round sets the budget: its sampling, judging and training seconds. The reward-model path spends the same
sampling and judging (its data are those pairs), then trains the reward model (`reward_model:` defaults), and GRPO
gets what is left of the budget (`training.max_seconds`), rewarded by the reward model and the verifier (weights 1
and 1). The revise path spends the same sampling, then critiques and revises each prompt's first sample with
`--reviser` against the constitution (kept only if it passes the check and the training judge prefers it), and DPO
gets what is left. A path whose data alone cost the budget still trains one step (and its row says so). All three
adapters are evaluated as a round's evaluate stage does, with the verifier as the evaluation judge (no AI judge's
time in the comparison): task completion with paired CIs, benign refusals, length and KL per token from the
champion. Uses the helpers of benchmarks/dpo_vs_grpo.py, which compared DPO and GRPO the same way.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpo_vs_grpo import GRPO_PROMPTS_PER_STEP, configure, grpo_config, outcome, table, timed  # noqa: E402

from components import reward_stage, stages  # noqa: E402
from components.config.experiment import PairsConfig, RewardModelConfig  # noqa: E402
from components.config.judges import VerifierJudgeConfig  # noqa: E402
from components.data import load_prompts  # noqa: E402
from components.evaluate_stage import evaluate  # noqa: E402
from components.models import Policy  # noqa: E402
from components.requests import (  # noqa: E402
    evaluate_request,
    generate_request,
    judge_request,
    reward_request,
    train_request,
)

MIN_SECONDS = 1.0  # a path out of budget still trains one step (TimeBudget always lets the first run)


def run(cfg, work: Path, reviser: str) -> list[dict]:
    cfg = cfg.model_copy(update={"reward_model": RewardModelConfig()})  # the reward model + GRPO arm's
    champion, data, seed = Policy(cfg.models.policy), cfg.data, cfg.seed

    def train(training, name: str, generated, judged, reward_model=None):
        with_training = cfg.model_copy(update={"training": training})
        return stages.train(
            train_request(with_training, champion, generated.path, judged, work / name, seed, reward_model)
        )

    generated, gen_s = timed(lambda: stages.generate(generate_request(cfg, champion, work / "gen", seed)))
    judged, judge_s = timed(
        lambda: stages.judge(judge_request(cfg, champion, generated.path, work / "pairs", None, None))
    )
    dpo, dpo_s = timed(lambda: train(cfg.training, "dpo", generated, judged))
    budget = gen_s + judge_s + dpo_s

    rewarded, rm_s = timed(
        lambda: reward_stage.reward_model(reward_request(cfg, [(1, judged.path)], work / "reward_model", seed))
    )
    grpo_left = budget - gen_s - judge_s - rm_s
    grpo_training = grpo_config(cfg, max(grpo_left, MIN_SECONDS)).model_copy(update={"reward": "reward_model"})
    rm_grpo, grpo_s = timed(lambda: train(grpo_training, "rm-grpo", generated, judged, rewarded.path))

    revise_pairs = PairsConfig(kind="revise", reviser=reviser, max_new_tokens=cfg.generation.max_new_tokens)
    revised, revise_s = timed(
        lambda: stages.judge(
            judge_request(
                cfg.model_copy(update={"pairs": revise_pairs}), champion, generated.path, work / "revised", None, None
            )
        )
    )
    revise_left = budget - gen_s - revise_s
    revise_training = cfg.training.model_copy(update={"max_seconds": max(revise_left, MIN_SECONDS)})
    revise_dpo, revise_train_s = timed(lambda: train(revise_training, "revise-dpo", generated, revised))

    evaluation = cfg.evaluation.model_copy(update={"judge": VerifierJudgeConfig(), "self_agreement": False})
    evaluated_by = cfg.model_copy(update={"evaluation": evaluation})
    arms = [
        ("dpo on judged pairs", dpo, budget, {"pairs": judged.pairs - judged.abstained}, None),
        (
            "reward model + GRPO",
            rm_grpo,
            gen_s + judge_s + rm_s + grpo_s,
            {"samples_scored": rm_grpo.metrics["steps"] * grpo_training.per_device_train_batch_size},
            rewarded.path,
        ),
        (
            "critique-and-revise + DPO",
            revise_dpo,
            gen_s + revise_s + revise_train_s,
            {"pairs": revised.pairs - revised.abstained},
            None,
        ),
    ]
    n_prompts, rows = len(load_prompts(data.train_prompts)), []
    for method, trained, seconds, seen, reward_model in arms:
        out = work / f"eval-{method.split()[0]}"
        started = time.perf_counter()
        challenger = champion.with_adapter(trained.path)
        evaluated = evaluate(evaluate_request(evaluated_by, champion, challenger, out, work / "memo", reward_model))
        eval_s = round(time.perf_counter() - started, 1)
        row = {"method": method, "round_seconds": seconds, "prompts": n_prompts, **seen}
        rows.append(row | outcome(trained.metrics, evaluated.metrics) | {"eval_seconds": eval_s})
    rows[1]["reward_model"] = {k: v for k, v in rewarded.metrics.items() if not k.endswith(("_low", "_high"))}
    rows[1]["prompts"] = rm_grpo.metrics["steps"] * GRPO_PROMPTS_PER_STEP
    rows[2]["revisions_dropped"] = revised.dropped
    return rows


def main() -> None:
    def reviser(parser):
        parser.add_argument("--reviser", default="self", help="pairs.reviser of the revise path (transformers)")

    args, cfg, work = configure(__doc__.splitlines()[0], "rlaif-paths-", reviser)
    started = time.perf_counter()
    rows = run(cfg, work, args.reviser)
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    seconds = time.perf_counter() - started
    print(
        f"{date.today()} · {platform.processor() or platform.machine()} · config {args.config}, "
        f"{args.train_prompts} training prompts · {seconds:.0f} s · outputs in {work}"
    )
    print(table(rows))
    print(f"\nreward model: {json.dumps(rows[1]['reward_model'])}")
    print(f"revisions dropped: {rows[2]['revisions_dropped']}")


if __name__ == "__main__":
    main()

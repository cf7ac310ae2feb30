"""The four stages of a round as plain functions: paths and small records in, a finished directory out.

Each stage writes to a temp dir and renames it into place (`save_stage`), and returns at once when its output
directory already exists, so a re-run after a crash skips finished stages and never reads a half-written one.
Prefect wraps these in tasks (flows/round.py); a plain script can call them in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from transformers import AutoConfig

from components.biased import BiasedJudge
from components.config import (
    AIJudgeConfig,
    BiasedJudgeConfig,
    ExperimentConfig,
    GenerationConfig,
    JudgeConfig,
    PanelJudgeConfig,
    RemoteJudgeConfig,
    VerifierJudgeConfig,
    WeightedJudgeConfig,
    model_judges,
)
from components.data import DataError, load_prompts, load_rows, save_rows, save_stage, user_message
from components.evaluator import (
    benign_refusal_delta,
    cohort_table,
    compare,
    head_to_head,
    judge_gold_agreement,
    judge_policy_agreement,
    kl_per_token,
    mean_ci,
    refusal_ratio,
    score_rows,
    summarise,
    task_completion_deltas,
    win_rate,
    with_ci,
)
from components.generator import Generator, TransformersGenerator, VLLMGenerator, chat_prompt, vllm_available
from components.judge import (
    Judge,
    JudgeReward,
    LengthControlledJudge,
    LogprobJudge,
    PanelJudge,
    VerifierJudge,
    WeightedJudge,
    build_pairs,
    load_rubric,
)
from components.judge_reliability import abstention_rate, agreement, length_slope, order_consistency
from components.models import Policy, load_policy, load_tokenizer, resolve_model, response_logprob
from components.remote_judge import RemoteJudge
from components.trainer import DPOLoRATrainer, OnlineTrainer, load_for_training


def make_judge(config: JudgeConfig, champion: Policy) -> Judge:
    """Build the judge a config names; `model: self` means the current champion judges."""
    judge = _make_judge(config, champion)
    if getattr(config, "length_controlled", False):
        return LengthControlledJudge(judge, config.abstain_margin)
    return judge


def _make_judge(config: JudgeConfig, champion: Policy) -> Judge:
    match config:
        case VerifierJudgeConfig():
            return VerifierJudge()
        case BiasedJudgeConfig():
            return BiasedJudge(config.bias)
        case PanelJudgeConfig():
            routes = {cohort: make_judge(judge, champion) for cohort, judge in config.by_cohort.items()}
            return PanelJudge(make_judge(config.checkable, champion), make_judge(config.default, champion), routes)
        case WeightedJudgeConfig():
            return WeightedJudge([make_judge(j, champion) for j in config.judges], config.weights)
        case RemoteJudgeConfig():
            settings = config.model_dump(exclude={"kind", "rubric", "length_controlled"})
            return RemoteJudge(rubric=load_rubric(config.rubric), **settings)
        case AIJudgeConfig():
            policy = champion if config.model == "self" else Policy(config.model)
            return LogprobJudge(
                name=f"ai:{config.model}",
                model=load_policy(policy),
                tokenizer=load_tokenizer(policy.base),
                rubric=load_rubric(config.rubric),
                prompt_style=config.prompt_style,
                abstain_margin=config.abstain_margin,
                batch_size=config.batch_size,
            )


def generate(cfg: ExperimentConfig, champion: Policy, out: Path, seed: int) -> Path:
    """Sample `samples_per_prompt` responses per training prompt from the champion."""

    def build(tmp: Path) -> None:
        prompts = list(load_prompts(cfg.data.train_prompts, cfg.data.max_train_prompts))
        tokenizer = load_tokenizer(champion.base)
        check_context(prompts, champion.base, tokenizer, cfg.generation.max_new_tokens, cfg.data.train_prompts)
        backend, generator = make_generator(cfg.generation, champion, tokenizer)
        save_rows(generator.generate(prompts, cfg.generation.samples_per_prompt, seed), tmp)
        (tmp / "generator.json").write_text(json.dumps({"backend": backend}))

    return save_stage(out, build)


def check_context(prompts: list[dict], base: str, tokenizer, max_new_tokens: int, source: str) -> None:
    """Refuse, naming the prompt, a prompt that leaves no room for `max_new_tokens` in the model's context:
    truncating it would silently change the task, and dropping it would silently shrink the cohort."""
    config = AutoConfig.from_pretrained(resolve_model(base))
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context is None:  # the architecture does not say; the model itself will complain
        return
    for row in prompts:
        n_tokens = len(tokenizer(chat_prompt(tokenizer, row), add_special_tokens=False).input_ids)
        if n_tokens + max_new_tokens > context:
            raise DataError(
                f"{source}: prompt id {row['id']!r} is {n_tokens} tokens; with max_new_tokens {max_new_tokens} "
                f"it does not fit the model's context of {context} tokens"
            )


def make_generator(g: GenerationConfig, policy: Policy, tokenizer=None) -> tuple[str, Generator]:
    """The sampling backend a config names (`auto`: vLLM when installed), and its name for the logs."""
    backend = ("vllm" if vllm_available() else "transformers") if g.backend == "auto" else g.backend
    if backend == "vllm":
        return backend, VLLMGenerator(policy, g.max_new_tokens, g.temperature, g.top_p)
    model = load_policy(policy, merge_last=False)  # the newest adapter served unmerged, as vLLM serves it
    tokenizer = tokenizer or load_tokenizer(policy.base)
    return backend, TransformersGenerator(model, tokenizer, g.max_new_tokens, g.temperature, g.top_p, g.batch_size)


def judge(cfg: ExperimentConfig, champion: Policy, generations: Path, out: Path) -> Path:
    """Turn each prompt's samples into one preference pair (or a counted abstention) with the training judge."""

    def build(tmp: Path) -> None:
        prompts = list(load_prompts(cfg.data.train_prompts, cfg.data.max_train_prompts))
        pairs = build_pairs(make_judge(cfg.judge, champion), prompts, list(load_rows(generations)))
        save_rows(pairs, tmp)

    return save_stage(out, build)


def train(cfg: ExperimentConfig, champion: Policy, generations: Path, pairs: Path, out: Path, seed: int) -> Path | None:
    """Train a fresh LoRA adapter on the champion; None when DPO has no non-abstained pair to learn from.

    Checkpoints live beside the output (`.adapter.checkpoints/`), so a killed run resumes from the last one.
    """
    checkpoints = out.parent / f".{out.name}.checkpoints"
    t = cfg.training
    if t.method == "dpo":
        rows = load_rows(pairs)
        if all(rows["abstained"]):
            return None

        def build(tmp: Path) -> None:
            model = load_for_training(champion, t)
            DPOLoRATrainer(model, load_tokenizer(champion.base), t, seed, checkpoints).train(rows, tmp)

    else:

        def build(tmp: Path) -> None:
            prompts = load_prompts(cfg.data.train_prompts, cfg.data.max_train_prompts)
            anchors = {g["prompt_id"]: g["response"] for g in load_rows(generations) if g["sample"] == 0}
            reward = JudgeReward(make_judge(cfg.judge, champion), list(prompts), anchors)
            model = load_for_training(champion, t)
            OnlineTrainer(model, load_tokenizer(champion.base), t, seed, reward, checkpoints).train(prompts, tmp)

    return save_stage(out, build)


def evaluate(cfg: ExperimentConfig, champion: Policy, challenger: Policy, out: Path) -> Path:
    """Greedy responses from both on the held-out prompts; verifier, refusal and length metrics; the evaluation
    judge's win rate; and the drift signals that need the models (KL, judge-policy and judge-gold agreement)."""

    def build(tmp: Path) -> None:
        prompts = list(load_prompts(cfg.data.eval_prompts, cfg.data.max_eval_prompts))
        e = cfg.evaluation
        tokenizer = load_tokenizer(champion.base)
        check_context(prompts, champion.base, tokenizer, e.max_new_tokens, cfg.data.eval_prompts)
        models, responses = {}, {}
        for name, policy in (("champion", champion), ("challenger", challenger)):
            models[name] = load_policy(policy)
            generator = TransformersGenerator(models[name], tokenizer, e.max_new_tokens, 0.0, batch_size=e.batch_size)
            responses[name] = generator.generate(prompts, 1, seed=cfg.seed)
        items = head_to_head(prompts, responses["challenger"], responses["champion"])
        eval_judge = make_judge(e.judge, champion)
        verdicts = eval_judge.judge(items)
        rate, wins = win_rate(verdicts)
        rows = score_rows(prompts, responses["champion"], "champion")
        challenger_rows = score_rows(prompts, responses["challenger"], "challenger")
        for row, win in zip(challenger_rows, wins, strict=True):
            row["judge_win"] = win
        for row in rows:
            row["judge_win"] = None
        summary = {"champion": summarise(rows), "challenger": summarise(challenger_rows)}
        vs = compare(summary["challenger"], summary["champion"], rate, e.refusal_floor)
        vs |= with_ci("win_rate", rate, mean_ci(wins))
        vs |= task_completion_deltas(rows + challenger_rows)
        vs |= benign_refusal_delta(rows + challenger_rows)
        gold = judge_gold_agreement(wins, [r["task_ok"] for r in challenger_rows], [r["task_ok"] for r in rows])
        vs |= with_ci("judge_gold_agreement", float(mean(gold)) if gold else float("nan"), mean_ci(gold))
        vs |= _model_drift(models, tokenizer, prompts, responses, wins)
        vs |= _judge_reliability(cfg, champion, items, verdicts)
        vs |= _vs_base(cfg, champion, tokenizer, prompts, challenger_rows, rows, eval_judge, wins)
        summary["vs_champion"] = vs
        summary["cohorts"] = cohort_table(rows + challenger_rows)
        save_rows(rows + challenger_rows, tmp)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

    return save_stage(out, build)


def _vs_base(
    cfg: ExperimentConfig,
    champion: Policy,
    tokenizer,
    prompts: list,
    challenger_rows: list[dict],
    champion_rows: list[dict],
    judge: Judge,
    wins: list,
) -> dict[str, float]:
    """The challenger against the round-0 base (win rate, task completion, benign refusals), so a drift that each
    promotion hides inside its own CI or threshold still adds up where a rule can see it. While the champion is
    the base, these are the vs-champion numbers."""
    base_rows = champion_rows
    if champion.adapters:
        e = cfg.evaluation
        generator = TransformersGenerator(load_policy(Policy(champion.base)), tokenizer, e.max_new_tokens, 0.0)
        base_responses = generator.generate(prompts, 1, seed=cfg.seed)
        _, wins = win_rate(judge.judge(head_to_head(prompts, challenger_rows, base_responses)))
        base_rows = score_rows(prompts, base_responses, "champion")  # the reference side of each pair
    metrics = task_completion_deltas(challenger_rows + base_rows, "task_completion_delta_vs_base")
    refusals = [summarise(rows)["benign_refusal_rate"] for rows in (challenger_rows, base_rows)]
    metrics["benign_refusal_ratio_vs_base"] = refusal_ratio(*refusals, cfg.evaluation.refusal_floor)
    return with_ci("win_rate_vs_base", float(mean(wins)), mean_ci(wins)) | metrics


def _judge_reliability(cfg: ExperimentConfig, champion: Policy, items: list, verdicts: list) -> dict[str, float]:
    """The evaluation judge's own trustworthiness this round, and (optionally) how often the champion judging
    itself agrees with it: the correlated-error check for self-rewarding."""
    metrics = {
        "judge_order_consistency": order_consistency(verdicts),
        "judge_abstention_rate": abstention_rate(verdicts),
        "judge_length_slope": length_slope(items, verdicts),
    }
    if cfg.evaluation.self_agreement:
        self_verdicts = make_judge(self_judge_config(cfg), champion).judge(items)
        metrics["self_cross_agreement"] = agreement(self_verdicts, verdicts)
        metrics["self_judge_order_consistency"] = order_consistency(self_verdicts)
    return metrics


def self_judge_config(cfg: ExperimentConfig) -> AIJudgeConfig:
    """The training judge when the champion judges itself; else the champion as a chat judge on the eval rubric."""
    for judge in model_judges(cfg.judge):
        if isinstance(judge, AIJudgeConfig) and judge.model == "self":
            return judge
    return AIJudgeConfig(model="self", prompt_style="chat", rubric=cfg.evaluation.judge.rubric)


def _model_drift(models: dict, tokenizer, prompts: list[dict], responses: dict, wins: list[float]) -> dict:
    """KL(challenger || champion) on the challenger's responses, and how often the challenger's DPO implicit
    reward (log-ratio to the champion, its reference) orders each held-out pair the way the judge did."""
    logp = {
        (model, author): [
            response_logprob(models[model], tokenizer, user_message(p), g["response"])
            for p, g in zip(prompts, responses[author], strict=True)
        ]
        for model in ("challenger", "champion")
        for author in ("challenger", "champion")
    }

    def reward(author: str) -> list[float]:
        return [c - r for c, r in zip(logp["challenger", author], logp["champion", author], strict=True)]

    margins = [a - b for a, b in zip(reward("challenger"), reward("champion"), strict=True)]
    n_tokens = [g["n_tokens"] for g in responses["challenger"]]
    return {
        "kl_per_token": kl_per_token(logp["challenger", "challenger"], logp["champion", "challenger"], n_tokens),
        "judge_policy_agreement": judge_policy_agreement(wins, margins),
    }


def eval_metrics(eval_dir: Path) -> dict[str, float]:
    """Challenger and champion rates and the gate's comparison metrics from one evaluation."""
    summary = json.loads((eval_dir / "summary.json").read_text())
    metrics = {f"challenger_{k}": v for k, v in summary["challenger"].items()}
    metrics |= {f"champion_{k}": v for k, v in summary["champion"].items()}
    return metrics | summary["vs_champion"]


def round_metrics(round_dir: Path) -> dict[str, float]:
    """Everything a round reports: the evaluation's metrics, pair yield and abstentions, and the trainer's signals
    (prefixed `train_`)."""
    pairs = load_rows(round_dir / "pairs")
    training = json.loads((round_dir / "adapter" / "train_metrics.json").read_text())
    metrics = eval_metrics(round_dir / "eval")
    metrics |= {"pairs": float(len(pairs)), "abstention_rate": sum(pairs["abstained"]) / max(len(pairs), 1)}
    metrics |= {f"train_{k}": float(v) for k, v in training.items() if isinstance(v, int | float)}
    return metrics

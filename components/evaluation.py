"""The evaluate stage: the challenger against the champion (and the round-0 base) on the held-out prompts.

One load of the policy serves the whole stage: the challenger's adapter is switched off to make the champion
(`PolicyPair`), and the same model in memory answers, judges itself for the self-agreement check, and scores
log-probs for KL and the implicit reward. Greedy answers are kept per policy in the bootstrap's `answers/` cache,
so the base's and a standing champion's answers are computed once per bootstrap, not once per round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from tqdm.auto import tqdm

from components import evaluator as ev
from components import metrics
from components.build import make_generator, make_judge
from components.config import DataConfig, EvaluationConfig, GenerationConfig, ModelsConfig
from components.data import load_prompts, load_rows, save_rows, save_stage, user_message
from components.generator import Sampling
from components.judge import Judge
from components.judge_config import AIJudgeConfig, JudgeConfig, model_judges
from components.judge_reliability import abstention_rate, agreement, length_slope, order_consistency
from components.models import Policy, PolicyPair, load_tokenizer, response_logprob
from components.reward_model import RewardModel, hacking_signals


@dataclass(frozen=True)
class Evaluated:
    path: str
    metrics: dict[str, float]
    cohorts: list[dict]  # per model and cohort: rate, CI, refusals, length (the report's table)


@dataclass(frozen=True)
class EvalInputs:
    """What the evaluation reads from the config, as one task input."""

    models: ModelsConfig
    data: DataConfig
    generation: GenerationConfig
    evaluation: EvaluationConfig
    training_judge: JudgeConfig
    seed: int


def evaluate(
    inputs: EvalInputs, champion: Policy, challenger: Policy, out: Path, answers: Path, reward_model: str | None = None
) -> Evaluated:
    """Greedy answers from both; verifier, refusal and length metrics; the evaluation judge's win rates against
    the champion and the base; the drift signals that need the models (KL, judge-policy and judge-gold agreement);
    and with the round's `reward_model`, its score of the challenger's answers against the base's."""
    e = inputs.evaluation

    def build(tmp: Path) -> dict:
        prompts = list(load_prompts(inputs.data.eval_prompts, inputs.data.max_eval_prompts))
        tokenizer = load_tokenizer(champion.base)
        pair = PolicyPair(champion, challenger, inputs.models)
        greedy = {
            who: _answers(inputs, policy, prompts, tokenizer, pair, who, answers)
            for who, policy in (("champion", champion), ("challenger", challenger))
        }
        base = greedy["champion"] if not champion.adapters else _base_answers(inputs, champion, prompts, answers)
        eval_judge = make_judge(e.judge, champion, inputs.models)
        items = ev.head_to_head(prompts, greedy["challenger"], greedy["champion"])
        verdicts = eval_judge.judge(items)
        _, wins = ev.win_rate(verdicts)
        rows = _scored_rows(prompts, greedy, wins)
        found = _vs_champion(rows, verdicts, e)
        found |= _vs_base(prompts, rows, base, eval_judge, champion, e)
        reliability, self_wins = _reliability(inputs, champion, pair, tokenizer, items, verdicts)
        found |= reliability
        _add_self_wins(rows, self_wins)
        found |= _drift(pair, tokenizer, prompts, greedy, wins)
        if reward_model:
            scorer = RewardModel.from_stage(reward_model, inputs.models)
            task_high = found["task_completion_delta_vs_base_ci_high"]
            found |= hacking_signals(scorer, prompts, greedy["challenger"], base, task_high, _ci(e))
        save_rows(rows, tmp)
        return {"metrics": metrics.grouped(found), "cohorts": ev.cohort_table(rows, _ci(e))}

    return Evaluated(str(out), **save_stage(out, build, record="summary.json"))


def _ci(e: EvaluationConfig):
    return lambda values: ev.mean_ci(values, e.ci_level, e.ci_resamples)


def _answers(inputs, policy, prompts, tokenizer, pair: PolicyPair, who: str, answers: Path) -> list[dict]:
    """`policy`'s greedy held-out answers: from the cache when this bootstrap already has them."""

    def generate() -> list[dict]:
        with pair.use(who) as model:
            return _greedy(inputs, policy, tokenizer, model).generate(prompts, 1, inputs.seed)

    return _cached(answers, inputs, policy, generate)


def _base_answers(inputs: EvalInputs, champion: Policy, prompts, answers: Path) -> list[dict]:
    """The round-0 base's answers: computed in round 1 and kept; loaded again only outside a bootstrap."""
    base = Policy(champion.base)

    def generate() -> list[dict]:
        tokenizer = load_tokenizer(base.base)
        return _greedy(inputs, base, tokenizer, None).generate(prompts, 1, inputs.seed)

    return _cached(answers, inputs, base, generate)


def _greedy(inputs: EvalInputs, policy: Policy, tokenizer, model):
    sampling = Sampling(inputs.evaluation.max_new_tokens, 0.0, 1.0)
    batch = inputs.evaluation.batch_size
    return make_generator(inputs.generation, policy, inputs.models, tokenizer, sampling, batch, model)


def _cached(answers: Path, inputs: EvalInputs, policy: Policy, generate) -> list[dict]:
    # The answers depend on the policy's weights, the prompts and the token cap (greedy, so not on the seed).
    d, e = inputs.data, inputs.evaluation
    prompts = f"{Path(d.eval_prompts).stem}-{d.max_eval_prompts}"
    key = f"{policy.key()}-{prompts}-{e.max_new_tokens}-{inputs.generation.kind}"

    def build(tmp: Path) -> dict:
        rows = generate()
        save_rows(rows, tmp)
        return {"policy": policy.base, "adapters": list(policy.adapters), "rows": len(rows)}

    save_stage(answers / key, build)
    return list(load_rows(answers / key))


def _scored_rows(prompts: list[dict], greedy: dict[str, list[dict]], wins: list[float]) -> list[dict]:
    """One row per prompt and model; the challenger's rows carry the judge's verdict on its answer."""
    champion_rows = ev.score_rows(prompts, greedy["champion"], "champion")
    challenger_rows = ev.score_rows(prompts, greedy["challenger"], "challenger")
    for row in champion_rows:
        row["judge_win"] = None
    for row, win in zip(challenger_rows, wins, strict=True):
        row["judge_win"] = win
    return champion_rows + challenger_rows


def _vs_champion(rows: list[dict], verdicts, e: EvaluationConfig) -> dict[str, float]:
    ci = _ci(e)
    rate, wins = ev.win_rate(verdicts)
    by_model = {who: [r for r in rows if r["model"] == who] for who in ("champion", "challenger")}
    summary = {who: ev.summarise(model_rows, ci) for who, model_rows in by_model.items()}
    found = {f"{who}_{k}": v for who, s in summary.items() for k, v in s.items()}
    found |= ev.compare(summary["challenger"], summary["champion"], rate, e.refusal_floor)
    found |= metrics.with_ci("win_rate", rate, ci(wins))
    found |= ev.task_completion_deltas(rows, "task_completion_delta", ci)
    found |= ev.benign_refusal_delta(rows, ci)
    ok = {who: [r["task_ok"] for r in model_rows] for who, model_rows in by_model.items()}
    gold = ev.judge_gold_agreement(wins, ok["challenger"], ok["champion"])
    return found | metrics.with_ci("judge_gold_agreement", float(mean(gold)) if gold else float("nan"), ci(gold))


def _vs_base(prompts, rows, base_answers, judge: Judge, champion: Policy, e: EvaluationConfig) -> dict[str, float]:
    """The challenger against the round-0 base, so a drift that each promotion hides inside its own CI or threshold
    still adds up where a rule can see it. While the champion is the base, these are the vs-champion numbers."""
    ci = _ci(e)
    challenger_rows = [r for r in rows if r["model"] == "challenger"]
    if champion.adapters:
        _, wins = ev.win_rate(judge.judge(ev.head_to_head(prompts, challenger_rows, base_answers)))
        base_rows = ev.score_rows(prompts, base_answers, "champion")  # the reference side of each pair
    else:
        wins = [r["judge_win"] for r in challenger_rows]
        base_rows = [r for r in rows if r["model"] == "champion"]
    found = ev.task_completion_deltas(challenger_rows + base_rows, "task_completion_delta_vs_base", ci)
    refusals = [ev.summarise(r, ci)["benign_refusal_rate"] for r in (challenger_rows, base_rows)]
    found["benign_refusal_ratio_vs_base"] = ev.refusal_ratio(*refusals, e.refusal_floor)
    return metrics.with_ci("win_rate_vs_base", float(mean(wins)), ci(wins)) | found


def _reliability(inputs: EvalInputs, champion: Policy, pair: PolicyPair, tokenizer, items, verdicts) -> tuple:
    """The evaluation judge's own trustworthiness this round, and (optionally) how often the champion judging
    itself agrees with it: the correlated-error check for self-rewarding. The champion in memory is that judge.
    Also the self-judge's score of each challenger answer (None without self_agreement), for the review queue."""
    found = {
        "judge_order_consistency": order_consistency(verdicts),
        "judge_abstention_rate": abstention_rate(verdicts),
        "judge_length_slope": length_slope(items, verdicts),
    }
    if inputs.evaluation.self_agreement:
        with pair.use("champion") as model:
            self_judge = make_judge(self_judge_config(inputs), champion, inputs.models, loaded=(model, tokenizer))
            self_verdicts = self_judge.judge(items)
        found["self_cross_agreement"] = agreement(self_verdicts, verdicts)
        found["self_judge_order_consistency"] = order_consistency(self_verdicts)
        return found, ev.win_rate(self_verdicts)[1]
    return found, None


def _add_self_wins(rows: list[dict], self_wins: list[float] | None) -> None:
    """The self-judge's score beside the evaluation judge's on each challenger row (None elsewhere)."""
    challenger_rows = [r for r in rows if r["model"] == "challenger"]
    for row in rows:
        row["self_win"] = None
    if self_wins is not None:
        for row, win in zip(challenger_rows, self_wins, strict=True):
            row["self_win"] = win


def self_judge_config(inputs: EvalInputs) -> AIJudgeConfig:
    """The training judge when the champion judges itself; else the champion as a chat judge on the eval rubric."""
    for judge in model_judges(inputs.training_judge):
        if isinstance(judge, AIJudgeConfig) and judge.model == "self":
            return judge
    return AIJudgeConfig(model="self", prompt_style="chat", rubric=inputs.evaluation.judge.rubric)


def _drift(pair: PolicyPair, tokenizer, prompts: list[dict], greedy: dict, wins: list[float]) -> dict[str, float]:
    """KL(challenger || champion) on the challenger's answers, and how often the challenger's DPO implicit reward
    (log-ratio to the champion, its reference) orders each held-out pair the way the judge did."""
    logp = {}
    progress = tqdm(total=4 * len(prompts), desc="drift log-probs", unit="answer", leave=False, disable=None)
    for model_name in ("challenger", "champion"):
        with pair.use(model_name) as model:
            for author in ("challenger", "champion"):
                logp[model_name, author] = []
                for p, g in zip(prompts, greedy[author], strict=True):
                    logp[model_name, author].append(response_logprob(model, tokenizer, user_message(p), g["response"]))
                    progress.update()
    progress.close()

    def reward(author: str) -> list[float]:
        return [c - r for c, r in zip(logp["challenger", author], logp["champion", author], strict=True)]

    margins = [a - b for a, b in zip(reward("challenger"), reward("champion"), strict=True)]
    n_tokens = [g["n_tokens"] for g in greedy["challenger"]]
    return {
        "kl_per_token": ev.kl_per_token(logp["challenger", "challenger"], logp["champion", "challenger"], n_tokens),
        "judge_policy_agreement": ev.judge_policy_agreement(wins, margins),
    }

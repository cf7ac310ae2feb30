"""The evaluate stage: the challenger against the champion (and the round-0 base) on the held-out prompts.

One load of the policy serves the whole stage: the challenger's adapter is switched off to make the champion
(`PolicyPair`), and the same model in memory answers, judges itself for the self-agreement check, and scores
log-probs for KL and the implicit reward. What does not change between rounds is computed once and kept in the run
store's memo (components/memo.py): each policy's greedy held-out answers, the evaluation judge's scores and written
checks, and each policy's log-probs of each answer. So a round re-scores only its challenger's new answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from components import metrics
from components.build import make_generator
from components.build_judges import make_judge
from components.config.experiment import EvaluationConfig
from components.config.judges import self_judge_config
from components.data import load_prompts, load_rows, save_rows, save_stage, user_message
from components.evaluation import measures as ev
from components.evaluation.reliability import abstention_rate, agreement, length_slope, order_consistency
from components.generation.generator import Sampling
from components.judging.judge import Judge
from components.memo import Memo, memo_key
from components.models import Policy, PolicyPair, load_tokenizer, response_logprobs
from components.requests import EvaluateRequest
from components.training.reward_model import RewardModel, hacking_signals


@dataclass(frozen=True)
class Evaluated:
    path: str
    metrics: dict[str, float]
    cohorts: list[dict]  # per model and cohort: rate, CI, refusals, length (the report's table)


def evaluate(request: EvaluateRequest) -> Evaluated:
    """Greedy answers from both; verifier, refusal and length metrics; the evaluation judge's win rates against
    the champion and the base; the drift signals that need the models (KL, judge-policy and judge-gold agreement);
    and with the round's reward model, its score of the challenger's answers against the base's. What the memo
    holds is not computed again."""
    champion, challenger, out = request.champion, request.challenger, request.out
    e = request.evaluation

    def build(tmp: Path) -> dict:
        memo = Memo(request.memo)
        prompts = list(load_prompts(request.data.eval_prompts, request.data.max_eval_prompts))
        tokenizer = load_tokenizer(champion.base)
        pair = PolicyPair(champion, challenger, request.models)
        greedy = {
            who: _answers(request, policy, prompts, tokenizer, pair, who, memo)
            for who, policy in (("champion", champion), ("challenger", challenger))
        }
        base = greedy["champion"] if not champion.adapters else _base_answers(request, champion, prompts, memo)
        eval_judge = make_judge(e.judge, champion, request.models, memo=memo)
        items = ev.head_to_head(prompts, greedy["challenger"], greedy["champion"])
        verdicts = eval_judge.judge(items)
        _, wins = ev.win_rate(verdicts)
        rows = _scored_rows(prompts, greedy, wins, memo)
        found = _vs_champion(rows, verdicts, e)
        found |= _vs_base(prompts, rows, base, eval_judge, champion, e, memo)
        reliability, self_wins = _reliability(request, champion, pair, tokenizer, items, verdicts, memo)
        found |= reliability
        _add_self_wins(rows, self_wins)
        policies = {"champion": champion, "challenger": challenger}
        found |= _drift(pair, policies, tokenizer, prompts, greedy, wins, memo, e.batch_size)
        if request.reward_model:
            batch = request.reward_model_config.batch_size
            scorer = RewardModel.from_stage(request.reward_model, request.models, batch)
            task_high = found["task_completion_delta_vs_base_ci_high"]
            found |= hacking_signals(scorer, prompts, greedy["challenger"], base, task_high, ev.ci_for(e))
        save_rows(rows, tmp)
        return {"metrics": metrics.grouped(found), "cohorts": ev.cohort_table(rows, ev.ci_for(e))}

    return Evaluated(str(out), **save_stage(out, build, record="summary.json"))


def _answers(request, policy, prompts, tokenizer, pair: PolicyPair, who: str, memo: Memo) -> list[dict]:
    """`policy`'s greedy held-out answers: from the memo when a round or bootstrap before this one made them."""

    def generate() -> list[dict]:
        with pair.use(who) as model:
            return _greedy(request, policy, tokenizer, model).generate(prompts, 1, request.seed)

    return _cached(memo, request, policy, prompts, generate)


def _base_answers(request: EvaluateRequest, champion: Policy, prompts, memo: Memo) -> list[dict]:
    """The round-0 base's answers: computed in round 1 and kept; loaded again only when the memo lacks them."""
    base = Policy(champion.base)

    def generate() -> list[dict]:
        tokenizer = load_tokenizer(base.base)
        return _greedy(request, base, tokenizer, None).generate(prompts, 1, request.seed)

    return _cached(memo, request, base, prompts, generate)


def _greedy(request: EvaluateRequest, policy: Policy, tokenizer, model):
    sampling = Sampling(request.evaluation.max_new_tokens, 0.0, 1.0)
    batch = request.evaluation.batch_size
    return make_generator(request.generation, policy, request.models, tokenizer, sampling, batch, model)


def _cached(memo: Memo, request: EvaluateRequest, policy: Policy, prompts: list[dict], generate) -> list[dict]:
    """Greedy answers depend on the policy's weights, the prompts, the token cap, the sampler and its settings (a
    merged or a LoRA adapter in vLLM), its batches (left padding moves logits by rounding), the dtype and the
    device; not on the seed, nor on the training samples' temperature, count, cap and batch."""
    if memo.directory is None:
        return generate()
    e, g = request.evaluation, request.generation
    asked = [(p["id"], user_message(p)) for p in prompts]
    sampler = g.model_dump(exclude={"samples_per_prompt", "temperature", "top_p", "max_new_tokens", "batch_size"})
    key = memo_key(policy.digest(), asked, e.max_new_tokens, e.batch_size, sampler, request.models.model_dump())
    target = memo.path("answers", key)

    def build(tmp: Path) -> dict:
        rows = generate()
        save_rows(rows, tmp)
        return {"policy": policy.base, "adapters": list(policy.adapters), "rows": len(rows)}

    save_stage(target, build)
    return list(load_rows(target))


def _scored_rows(prompts: list[dict], greedy: dict[str, list[dict]], wins: list[float], memo: Memo) -> list[dict]:
    """One row per prompt and model; the challenger's rows carry the judge's verdict on its answer."""
    champion_rows = ev.score_rows(prompts, greedy["champion"], "champion", memo)
    challenger_rows = ev.score_rows(prompts, greedy["challenger"], "challenger", memo)
    for row in champion_rows:
        row["judge_win"] = None
    for row, win in zip(challenger_rows, wins, strict=True):
        row["judge_win"] = win
    return champion_rows + challenger_rows


def _vs_champion(rows: list[dict], verdicts, e: EvaluationConfig) -> dict[str, float]:
    ci = ev.ci_for(e)
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


def _vs_base(prompts, rows, base_answers, judge: Judge, champion: Policy, e: EvaluationConfig, memo: Memo) -> dict:
    """The challenger against the round-0 base, so a drift that each promotion hides inside its own CI or threshold
    still adds up where a rule can see it. While the champion is the base, these are the vs-champion numbers."""
    ci = ev.ci_for(e)
    challenger_rows = [r for r in rows if r["model"] == "challenger"]
    if champion.adapters:
        _, wins = ev.win_rate(judge.judge(ev.head_to_head(prompts, challenger_rows, base_answers)))
        base_rows = ev.score_rows(prompts, base_answers, "champion", memo)  # the reference side of each pair
    else:
        wins = [r["judge_win"] for r in challenger_rows]
        base_rows = [r for r in rows if r["model"] == "champion"]
    found = ev.task_completion_deltas(challenger_rows + base_rows, "task_completion_delta_vs_base", ci)
    found |= ev.hollow_delta(challenger_rows + base_rows, "hollow_delta_vs_base", ci)
    challenger, base = (ev.summarise(r, ci) for r in (challenger_rows, base_rows))
    found["benign_refusal_ratio_vs_base"] = ev.refusal_ratio(
        challenger["benign_refusal_rate"], base["benign_refusal_rate"], e.refusal_floor
    )
    found["length_ratio_vs_base"] = challenger["mean_length"] / max(base["mean_length"], 1e-9)
    found["base_hollow_rate"] = base["hollow_rate"]
    return metrics.with_ci("win_rate_vs_base", float(mean(wins)), ci(wins)) | found


def _reliability(
    request: EvaluateRequest, champion: Policy, pair: PolicyPair, tokenizer, items, verdicts, memo
) -> tuple:
    """The evaluation judge's own trustworthiness this round, and (optionally) how often the champion judging
    itself agrees with it: the correlated-error check for self-rewarding. The champion in memory is that judge.
    Also the self-judge's score of each challenger answer (None without self_agreement), for the review queue."""
    found = {
        "judge_order_consistency": order_consistency(verdicts),
        "judge_abstention_rate": abstention_rate(verdicts),
        "judge_length_slope": length_slope(items, verdicts),
    }
    if request.evaluation.self_agreement:
        with pair.use("champion") as model:
            self_judge = make_judge(
                self_judge_config(request.training_judge, request.evaluation.judge.rubric),
                champion,
                request.models,
                (model, tokenizer),
                memo,
            )
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


def _drift(
    pair: PolicyPair, policies: dict[str, Policy], tokenizer, prompts, greedy, wins, memo: Memo, batch: int
) -> dict:
    """KL(challenger || champion) on the challenger's answers, and how often the challenger's DPO implicit reward
    (log-ratio to the champion, its reference) orders each held-out pair the way the judge did."""
    logp = {}
    for model_name in ("challenger", "champion"):
        with pair.use(model_name) as model:
            for author in ("challenger", "champion"):
                texts = [(user_message(p), g["response"]) for p, g in zip(prompts, greedy[author], strict=True)]
                logp[model_name, author] = _logprobs(model, tokenizer, policies[model_name], texts, memo, batch)

    def reward(author: str) -> list[float]:
        return [c - r for c, r in zip(logp["challenger", author], logp["champion", author], strict=True)]

    margins = [a - b for a, b in zip(reward("challenger"), reward("champion"), strict=True)]
    n_tokens = [g["n_tokens"] for g in greedy["challenger"]]
    return {
        "kl_per_token": ev.kl_per_token(logp["challenger", "challenger"], logp["champion", "challenger"], n_tokens),
        "judge_policy_agreement": ev.judge_policy_agreement(wins, margins),
    }


def _logprobs(model, tokenizer, policy: Policy, texts: list[tuple[str, str]], memo: Memo, batch: int) -> list[float]:
    """`policy`'s log-prob of each (request, answer), from the memo where an earlier round computed it (the
    champion's log-probs of its own answers are the previous round's challenger's)."""
    identity = (policy.digest(), str(model.dtype)) if memo.directory else ()
    keys = [memo_key("logprob", *identity, user, response) for user, response in texts]
    compute = lambda missing: response_logprobs(model, tokenizer, [texts[i] for i in missing], batch)  # noqa: E731
    return memo.cached("logprobs", keys, compute, chunk=256)

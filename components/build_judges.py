"""Config to judge: the judges, verdicts, rerouted cohorts, revisers and pair makers the judge and evaluate stages
use, as their config's kind names. With components/build.py (generators, trainers, rewards, launchers), the only
place that chooses by a kind; tests/test_dispatch.py fails on a choice by kind anywhere else.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.config.experiment import ModelsConfig, PairsConfig
from components.config.judges import (
    AIJudgeConfig,
    BiasedJudgeConfig,
    JudgeConfig,
    PanelJudgeConfig,
    RefusalJudgeConfig,
    RemoteJudgeConfig,
    VerifierJudgeConfig,
    WeightedJudgeConfig,
)
from components.embedded import gguf_file, gguf_tokenizer
from components.generation.generator import Sampling, TransformersGenerator
from components.judging.biased import BiasedJudge
from components.judging.judge import (
    VERDICT_PREFIX,
    Judge,
    LengthControlledJudge,
    LogprobJudge,
    PairwiseLogprobJudge,
    PanelJudge,
    PointwiseLogprobJudge,
    VerifierJudge,
    WeightedJudge,
    load_rubric,
)
from components.judging.pairs import BestVsWorst, PairMaker
from components.judging.program_judge import ProgramJudge, code_writer
from components.judging.refusal_judge import RefusalJudge
from components.judging.remote_judge import RemoteJudge
from components.judging.revise import GeneratorReviser, LlamaCppReviser, Reviser, Revisions
from components.judging.scorers import LlamaCppScorer, MemoScorer, TransformersScorer
from components.memo import NO_MEMO, Memo, file_digest, memo_key
from components.models import Policy, load_policy, load_tokenizer


def make_judge(
    config: JudgeConfig,
    champion: Policy,
    models: ModelsConfig,
    loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    memo: Memo = NO_MEMO,
) -> Judge:
    """The judge a config names; `model: self` is the champion, which `loaded` holds (model, tokenizer) when the
    stage has it in memory already. An AI judge keeps its scores, completions and check results in `memo`."""
    judge = _make_judge(config, champion, models, loaded, memo)
    if isinstance(config, AIJudgeConfig | RemoteJudgeConfig) and config.length_controlled:
        return LengthControlledJudge(judge, config.abstain_margin, config.length_scale_words)
    return judge


def _make_judge(config: JudgeConfig, champion: Policy, models: ModelsConfig, loaded, memo: Memo) -> Judge:
    match config:
        case VerifierJudgeConfig():
            return VerifierJudge(memo)
        case BiasedJudgeConfig():
            return BiasedJudge(config.bias)
        case RefusalJudgeConfig():
            return RefusalJudge()
        case PanelJudgeConfig():
            routes = _cohort_judges(config, champion, models, loaded, memo)
            checkable = make_judge(config.checkable, champion, models, loaded, memo)
            default = make_judge(config.default, champion, models, loaded, memo)
            return PanelJudge(checkable, default, routes, config.ties_to_default)
        case WeightedJudgeConfig():
            judges = [make_judge(j, champion, models, loaded, memo) for j in config.judges]
            return WeightedJudge(judges, config.weights)
        case RemoteJudgeConfig():
            return RemoteJudge(config, load_rubric(config.rubric))
        case AIJudgeConfig():
            name = f"ai:{config.model}" + ("" if config.verdict == "prefilled" else f":{config.verdict}")
            scorer, tokenizer = _scorer(config, champion, models, loaded, name, memo)
            rubric, style, margin = load_rubric(config.rubric), config.prompt_style, config.abstain_margin
            if config.verdict == "program":
                writer = code_writer(scorer, tokenizer, style, config.check_the_task)
                if config.fallback == "none":  # what no written check separates abstains
                    return ProgramJudge(f"{name}-checks-only", writer, None, memo)
                # the same model scores what no check can decide, pointwise
                pointwise = f"ai:{config.model}:pointwise"
                fallback = logprob_judge(pointwise, scorer, tokenizer, rubric, style, "pointwise", margin)
                return ProgramJudge(name, writer, fallback, memo)
            return logprob_judge(name, scorer, tokenizer, rubric, style, config.verdict, margin)


def logprob_judge(
    name: str, scorer, tokenizer: PreTrainedTokenizerBase, rubric: str, prompt_style: str, verdict: str, margin: float
) -> LogprobJudge:
    """A model judge that asks for its verdict the way `verdict` names: `prefilled`, `letter` or `pointwise`."""
    match verdict:
        case "pointwise":
            return PointwiseLogprobJudge(name, scorer, tokenizer, rubric, prompt_style, margin)
        case "prefilled":
            return PairwiseLogprobJudge(name, scorer, tokenizer, rubric, prompt_style, margin, VERDICT_PREFIX)
        case "letter":
            return PairwiseLogprobJudge(name, scorer, tokenizer, rubric, prompt_style, margin)
    raise ValueError(f"judge.verdict: unknown {verdict!r}")


def route_judge(kind: str) -> Judge:
    """The judge `ratchet judge-check --route COHORT=KIND` hands a cohort to."""
    match kind:
        case "verifier":
            return VerifierJudge()
        case "refusal":
            return RefusalJudge()
    raise ValueError(f"--route: unknown kind {kind!r}")


def _cohort_judges(config: PanelJudgeConfig, champion: Policy, models: ModelsConfig, loaded, memo) -> dict:
    """A panel's `by_cohort` judges; cohorts routed to equal configs share one judge, so one model load."""
    built: dict[str, Judge] = {}
    routes = {}
    for cohort, judge_config in config.by_cohort.items():
        key = judge_config.model_dump_json()
        if key not in built:
            built[key] = make_judge(judge_config, champion, models, loaded, memo)
        routes[cohort] = built[key]
    return routes


def _scorer(config: AIJudgeConfig, champion: Policy, models: ModelsConfig, loaded, name: str, memo: Memo):
    """The model behind an AI judge, and its tokenizer (for the chat template and the label tokens); with a memo,
    its results are kept there under the model's digest."""
    match config.runtime:
        case "llama_cpp":
            tokenizer, gguf = gguf_tokenizer(config.model), gguf_file(config.model)
            scorer = LlamaCppScorer(gguf, tokenizer, config.context_tokens, name)
            identity = ("llama_cpp", file_digest(gguf)) if memo.directory else None
        case "transformers":
            policy = champion if config.model == "self" else Policy(config.model)
            if config.model == "self" and loaded is not None:
                model, tokenizer = loaded
            else:
                model, tokenizer = load_policy(policy, models), load_tokenizer(policy.base)
            scorer = TransformersScorer(model, tokenizer, config.batch_size, name)
            identity = ("transformers", policy.digest(), str(model.dtype), str(model.device), config.batch_size)
            identity = identity if memo.directory else None
    return (MemoScorer(scorer, memo, memo_key(*identity)) if identity else scorer), tokenizer


def make_reviser(config: PairsConfig, champion: Policy, models: ModelsConfig) -> Reviser:
    """The critique-and-revise model `pairs.reviser` names: the champion (`self`), a checkpoint, or a GGUF."""
    if config.reviser_runtime == "llama_cpp":
        gguf = gguf_file(config.reviser)
        return LlamaCppReviser(gguf, config.reviser, config.reviser_context_tokens, config.reviser_temperature)
    policy = champion if config.reviser == "self" else Policy(config.reviser)
    sampling = Sampling(config.max_new_tokens, config.reviser_temperature, 1.0)
    generator = TransformersGenerator(
        load_policy(policy, models), load_tokenizer(policy.base), sampling, config.reviser_batch_size
    )
    return GeneratorReviser(generator, config.reviser)


def make_pair_maker(config: PairsConfig, champion: Policy, models: ModelsConfig) -> PairMaker:
    """How the judge stage makes pairs, as `pairs.kind` names."""
    match config.kind:
        case "revise":
            reviser = make_reviser(config, champion, models)
            constitution = load_rubric(config.constitution)
            return Revisions(reviser, constitution, config.per_prompt, config.max_new_tokens, config.check_revisions)
        case "best_vs_worst":
            return BestVsWorst(config.per_prompt)

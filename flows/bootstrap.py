"""The bootstrap: N rounds of generate -> judge -> train -> evaluate -> gate, with MLflow lineage.

The bootstrap id is the config name plus a digest of what decides its outputs (everything but `rounds`, `gate`,
`review`, `workdir` and `execution`), so running the same config again resumes the same bootstrap, `--rounds 3`
after 2 adds round 3, and a changed gate rule re-decides the rounds without retraining them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from prefect import flow, get_client, get_run_logger, tags
from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from components.config.experiment import (
    UNDIGESTED,
    DPOTrainingConfig,
    ExperimentConfig,
    ModelsConfig,
    OnlineTrainingConfig,
    TransformersGenerationConfig,
)
from components.config.gate import GateConfig
from components.models import Policy
from components.validate import validate
from flows.engine import engine_for
from flows.forms import STORE_HELP, described, knob, load_form_config
from flows.reporting import artifact_key
from flows.round import RoundResult, bootstrap_round
from registry import lineage, links


def bootstrap_id(cfg: ExperimentConfig) -> str:
    return f"{cfg.name}-{cfg.digest()}"


@dataclass(frozen=True)
class BootstrapResult:
    bootstrap_id: str
    experiment: str
    workdir: str
    experiment_id: str
    parent_run_id: str
    model_name: str
    champion: Policy
    rounds: list[RoundResult]


def _flow_run_name() -> str:
    """bootstrap-<experiment name>-<date>; the file's stem if the config cannot be read (the run then fails)."""
    path = Path(flow_run.parameters["config"])
    try:
        name = yaml.safe_load(path.read_text()).get("name", path.stem)
    except (OSError, yaml.YAMLError, AttributeError, RecursionError):
        name = path.stem
    return f"bootstrap-{name}-{date.today().isoformat()}"


# The deployment form's experiment fields: flow parameter -> the config value it replaces when it is not empty.
KNOBS = {
    "rounds": "rounds",
    "seed": "seed",
    "policy": "models.policy",
    "training_judge": "judge",
    "samples_per_prompt": "generation.samples_per_prompt",
    "method": "training.kind",
    "learning_rate": "training.learning_rate",
    "beta": "training.beta",
    "num_train_epochs": "training.num_train_epochs",
    "max_steps": "training.max_steps",
    "lora_r": "training.lora_r",
    "on_block": "gate.on_block",
}
METHOD = (
    "Training method: dpo on the judge's pairs, or grpo / rloo online with the judge as the reward. Another method "
    "than the config's keeps its learning rate, epochs and LoRA settings and takes its own defaults for the rest."
)


@flow(name="bootstrap", flow_run_name=_flow_run_name)
@described
def bootstrap(
    config: Annotated[
        str, Field(description="Experiment YAML, relative to the project directory (configs/*.yaml).")
    ] = "configs/smoke.yaml",
    rounds: knob(ExperimentConfig, "rounds") = None,
    seed: knob(ExperimentConfig, "seed") = None,
    policy: knob(ModelsConfig, "policy") = None,
    training_judge: knob(ExperimentConfig, "judge") = None,
    samples_per_prompt: knob(TransformersGenerationConfig, "samples_per_prompt") = None,
    method: Annotated[Literal["dpo", "grpo", "rloo"] | None, Field(description=METHOD)] = None,
    learning_rate: knob(DPOTrainingConfig, "learning_rate") = None,
    beta: knob(OnlineTrainingConfig, "beta", "KL strength: DPO's preference temperature, GRPO's KL penalty.") = None,
    num_train_epochs: knob(DPOTrainingConfig, "num_train_epochs") = None,
    max_steps: knob(DPOTrainingConfig, "max_steps") = None,
    lora_r: knob(DPOTrainingConfig, "lora_r") = None,
    on_block: knob(GateConfig, "on_block") = None,
    store: Annotated[str, Field(description=STORE_HELP)] = ".",
    overrides: Annotated[
        dict[str, Any] | None,
        Field(description='Any other config value by dotted path, e.g. {"pairs.per_prompt": 2}.'),
    ] = None,
) -> BootstrapResult:
    """Check everything that can be checked, then run the config's rounds from its base policy."""
    arguments = dict(locals())
    chosen = {name: value for name, value in arguments.items() if name in KNOBS and value is not None}
    cfg = load_form_config(config, store, knob_overrides(chosen) | (overrides or {}))
    validate(cfg, Path(store))  # before anything is written: a bad input ends here, with no MLflow run
    return run_rounds(cfg, lineage.tracking_uri_for(store), lineage.artifact_root_for(store))


def knob_overrides(chosen: dict[str, Any]) -> dict[str, Any]:
    """The form's filled-in fields as config overrides by dotted path (a judge as the plain mapping YAML has)."""
    plain = {name: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for name, v in chosen.items()}
    return {KNOBS[name]: value for name, value in plain.items()}


def _tag_this_flow_run(*names: str) -> str | None:
    """Tags on the bootstrap's own flow run (deployments add theirs; `ratchet run` has none); returns who started
    it, where the server knows: on a shared stack the proxy names the person (stack/people.py)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted(set(run.tags) | set(names)))
    return run.created_by.display_value if run.created_by else None


def run_rounds(cfg: ExperimentConfig, tracking_uri: str, artifact_root: str | None) -> BootstrapResult:
    """The round loop: promote or keep the champion after each round, stop early when the gate says so."""
    run_name = bootstrap_id(cfg)
    out = Path(cfg.workdir).resolve() / run_name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    params = cfg.model_dump(mode="json", exclude=UNDIGESTED)  # MLflow params cannot change
    with lineage.bootstrap_run(tracking_uri, artifact_root, cfg.name, run_name, params, str(flow_run.id)) as tracking:
        lineage.tag(tracking_uri, tracking.run_id, {"ratchet.rounds": str(cfg.rounds)})
        lineage.log_prompts(
            tracking_uri,
            tracking.run_id,
            {"train_prompts": cfg.data.train_prompts, "eval_prompts": cfg.data.eval_prompts},
        )
        started_by = _tag_this_flow_run("ratchet", cfg.name)
        if started_by:
            lineage.tag(tracking_uri, tracking.run_id, {"ratchet.started_by": started_by})
        create_link_artifact(
            links.comparison_url(tracking.experiment_id),
            link_text=f"MLflow: {cfg.name} runs over rounds",
            key=f"{artifact_key(run_name)}-mlflow",
            description=f"MLflow parent run {tracking.run_id} in {tracking_uri}",
        )
        champion, version, results = Policy(cfg.models.policy), None, []
        runner = engine_for(cfg.execution).task_runner()
        round_flow = bootstrap_round if runner is None else bootstrap_round.with_options(task_runner=runner)
        for k in range(1, cfg.rounds + 1):
            with tags(cfg.name):
                result = round_flow(cfg, k, str(out), tracking, champion, version, results)
            results.append(result)
            champion, version = result.champion, result.champion_version
            if not result.decision.promote and cfg.gate.on_block == "stop":
                get_run_logger().warning("round %d blocked and gate.on_block is 'stop': ending the bootstrap", k)
                break
    return BootstrapResult(
        run_name, cfg.name, str(out), tracking.experiment_id, tracking.run_id, tracking.model_name, champion, results
    )

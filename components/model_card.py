"""The model card of an exported version: Hugging Face's README.md, front matter and all, written from what MLflow
recorded (registry/card.py gathers it). Nothing in it is typed by hand: the figures are the logged metrics, the
settings the bootstrap's config, the limits what those figures and the gate's warnings show."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from components.metrics import BY_KEY, show, show_ci
from components.report import decision_table, metrics_table, table_row

# Against the round-0 base, measured on the held-out cohorts by the evaluation judge and the gold checks.
VS_BASE = (
    "task/task_completion_delta_vs_base",
    "task/hollow_delta_vs_base",
    "judge/win_rate_vs_base",
    "length/length_ratio_vs_base",
    "refusal/benign_refusal_ratio_vs_base",
    "drift/kl_per_token",
)
CALIBRATION = (
    "judge/judge_gold_agreement",
    "judge/judge_order_consistency",
    "judge/judge_abstention_rate",
    "judge/judge_length_slope",
    "judge/self_cross_agreement",
    "judge/human_agreement_training",
    "judge/human_agreement_evaluation",
)
TRAINING = ("kind", "learning_rate", "beta", "num_train_epochs", "max_steps", "lora_r", "lora_alpha", "load_in_4bit")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def model_card(facts: dict, license: str) -> str:
    """README.md for the merged checkpoint of `facts["version"]`."""
    last = facts["rounds"][-1]
    sections = [
        _front_matter(facts, license),
        f"# {facts['model_name']} v{facts['version']}",
        _summary(facts),
        f"## Held-out results against the base (round {facts['round']}, CIs at {facts['ci_level']:.0%})",
        metrics_table({k: v for k, v in last.items() if k.split("_ci_")[0] in VS_BASE}),
        "## Rounds",
        _rounds_table(facts["rounds"]),
        "## Training",
        _training(facts["config"]),
        f"## The gate on round {facts['round']}",
        facts["decision"]["reason"],
        decision_table(facts["decision"]) if facts["decision"]["rules"] else "_No rule was checked._",
        "## The judges' calibration",
        metrics_table({k: v for k, v in last.items() if k.split("_ci_")[0] in CALIBRATION}),
        "## Known limits",
        "\n".join(f"- {limit}" for limit in known_limits(facts)),
    ]
    return "\n\n".join(sections) + "\n"


def base_license(base: str) -> str:
    """The licence in the base checkpoint's own card (a Hugging Face snapshot's README.md), else `other`: the merged
    model is the base's weights changed, under the base's terms."""
    readme = Path(base) / "README.md"
    if readme.is_file():
        front = readme.read_text().split("---")
        if len(front) > 2 and isinstance(meta := yaml.safe_load(front[1]), dict) and meta.get("license"):
            return str(meta["license"])
    return "other"


def _front_matter(facts: dict, license: str) -> str:
    method = facts["config"].get("training.kind", "dpo")
    meta = {"license": license, "library_name": "transformers", "pipeline_tag": "text-generation"}
    if HUB_ID.match(facts["base"]):
        meta["base_model"] = facts["base"]
    meta["tags"] = ["ratchet", "rlaif", method, "lora", "merged"]
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---"


def _summary(facts: dict) -> str:
    config = facts["config"]
    judge = config.get("judge.model") or config.get("judge.default.model") or config.get("judge.kind")
    return (
        f"{facts['base']} with {facts['adapters']} LoRA adapter(s) merged in, from Ratchet bootstrap "
        f"`{facts['bootstrap_id']}`: each round sampled {config.get('generation.samples_per_prompt')} answers per "
        f"prompt of `{config.get('data.train_prompts')}`, had them judged by the training judge "
        f"({config.get('judge.kind')}: {judge}), trained on the pairs with {config.get('training.kind', 'dpo')}, "
        f"and was evaluated on `{config.get('data.eval_prompts')}` by a judge that did not train it "
        f"({config.get('evaluation.judge.kind')}: {config.get('evaluation.judge.model')}) and the prompts' checks. "
        "A round became the champion only when the gate's rules held."
    )


def _rounds_table(rounds: list[dict]) -> str:
    keys = (
        "train/pairs_trained",
        "task/task_completion_delta_vs_base",
        "judge/win_rate_vs_base",
        "length/length_ratio_vs_base",
    )
    head = ["round", *(BY_KEY[k].label for k in keys), "gate"]
    lines = [table_row(*head), table_row(*["---"] * len(head))]
    for r in rounds:
        lines.append(table_row(r["round"], *(_with_ci(r, k) for k in keys), r["decision"]))
    return "\n".join(lines)


def _with_ci(metrics: dict, key: str) -> str:
    m = BY_KEY[key]
    value = show(metrics.get(key), m.format)
    if m.ci and f"{key}_ci_low" in metrics:
        value += " ({} to {})".format(*show_ci(metrics, key))
    return value


def _training(config: dict) -> str:
    found = {f"training.{k}": config[f"training.{k}"] for k in TRAINING if f"training.{k}" in config}
    found |= {k: v for k, v in config.items() if k.startswith(("pairs.kind", "generation.", "models.policy"))}
    return "\n".join(f"- `{key}`: {value}" for key, value in found.items())


def known_limits(facts: dict) -> list[str]:
    """What the version's own figures say it does not show: a change vs the base whose CI includes none, the gate's
    warnings, a judge that mostly abstained, and a length drift."""
    last, limits = facts["rounds"][-1], []
    for key in ("task/task_completion_delta_vs_base", "judge/win_rate_vs_base"):
        low, high = last.get(f"{key}_ci_low"), last.get(f"{key}_ci_high")
        no_change = 0.5 if BY_KEY[key].format == "pct" else 0.0
        if low is not None and high is not None and low <= no_change <= high:
            limits.append(f"{BY_KEY[key].label}: its CI ({_with_ci(last, key)}) includes no change.")
    for rule in facts["decision"]["rules"]:
        if rule["action"] == "warn" and not rule["holds"]:
            limits.append(f"The gate warned: `{rule['metric']} {rule['op']} {rule['threshold']:g}` did not hold.")
    for key, who in (("train/abstention_rate", "training"), ("judge/judge_abstention_rate", "evaluation")):
        if last.get(key, 0) > 0.5:
            limits.append(f"The {who} judge abstained on {show(last[key], 'pct')} of the pairs it judged.")
    ratio = last.get("length/length_ratio_vs_base")
    if ratio is not None and not 0.9 <= ratio <= 1.1:
        limits.append(f"Answers are {ratio:.2f} times the base's length.")
    limits.append("A judge's score that trained the model is not evidence it improved: the figures above are the")
    limits[-1] += " evaluation judge's and the prompts' checks, on held-out prompts."
    return limits

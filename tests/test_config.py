import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config.experiment import ExperimentConfig
from components.config.loading import RENAMED, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.name != "broken.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


@pytest.mark.parametrize(
    ("family", "names", "judges"),
    [
        ("gate-", ["clean", "length-loving", "refusal-loving", "sycophantic"], ["biased", "biased", "biased", "panel"]),
        ("reward-hacking-", ["clean", "length"], ["biased", "panel"]),
        ("goodhart-", ["honest", "short", "verifier"], ["ai", "verifier", "weighted"]),
    ],
)
def test_scenarios_differ_only_in_the_training_judge(family, names, judges):
    """So a scenario table compares judges, not settings."""
    shipped = [load_config(p) for p in SHIPPED if p.parent.name == "scenarios"]
    scenarios = [c for c in shipped if c.name.startswith(family)]
    assert sorted(c.name for c in scenarios) == [family + name for name in names]
    rest = [c.model_dump(exclude={"name", "judge"}) for c in scenarios]
    assert all(r == rest[0] for r in rest) and scenarios[0].gate.on_block == "stop"
    assert sorted(c.judge.kind for c in scenarios) == judges


REMOTE = "{kind: remote, model: m, base_url: 'https://judge.example/v1'"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, field",
    [
        ("name: x\ntraining: {learnig_rate: 1}\n", "training.learnig_rate"),
        ("name: x\nrounds: two\n", "rounds"),
        ("name: x\ngeneration: {samples_per_prompt: 1}\n", "generation.samples_per_prompt"),
        ("name: x\ndata: {max_train_prompts: 0}\n", "data.max_train_prompts"),
        ("name: x\ngate: {rules: [{metric: vibes, op: '>=', threshold: 1}]}\n", "gate.rules.0.metric"),
        ("name: x\nevaluation: {judge: {rubric: nope}}\n", "evaluation.judge"),
        ("rounds: 1\n", "name"),
        # what a form or `overrides` could use to reach a file or a secret (issue 42)
        ("name: x\nevaluation: {judge: {rubric: ../../../etc/hostname}}\n", "evaluation.judge.rubric"),
        ("name: x\npairs: {kind: revise, constitution: ../rubrics/x}\n", "pairs.constitution"),
        (
            f"name: x\nevaluation: {{judge: {REMOTE}, api_key_env: MLFLOW_TRACKING_PASSWORD}}}}\n",
            "evaluation.judge.api_key_env",
        ),
        (
            f"name: x\nevaluation: {{judge: {REMOTE}, api_key_env: PREFECT_API_AUTH_STRING}}}}\n",
            "evaluation.judge.api_key_env",
        ),
        (
            "name: x\nevaluation: {judge: {kind: remote, model: m, base_url: 'http://10.0.0.5/v1'}}\n",
            "evaluation.judge.base_url",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f" {field}: " in str(err.value)


def test_eval_judge_must_differ_from_training_judge(tmp_path):
    text = "name: x\njudge: {kind: ai, model: gemma3-270m}\nevaluation: {judge: {model: gemma3-270m}}\n"
    with pytest.raises(ConfigError, match="evaluation judge must differ"):
        load_config(write(tmp_path, text))


def test_malformed_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_digest_is_stable_and_sensitive():
    a, b = ExperimentConfig(name="x"), ExperimentConfig(name="x", seed=1)
    assert a.digest() == ExperimentConfig(name="x").digest()
    assert a.digest() != b.digest()


def test_cli_refuses_broken_config_and_writes_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(ROOT / "configs" / "broken.yaml"), "--store", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "training.learnig_rate" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_prefect_yaml_deployments_load_their_flow_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert {d["name"] for d in deployments} == {"smoke", "default", "evaluate"}
    for deployment in deployments:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.name == ("evaluate" if deployment["name"] == "evaluate" else "bootstrap")
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
        load_config(ROOT / deployment["parameters"]["config"])


def test_the_deployment_form_shows_the_experiments_knobs_typed_and_described():
    """The form Prefect renders is this schema: a field per knob, with the config's description and its rule."""
    from prefect.flows import load_flow_from_entrypoint

    from flows.bootstrap import KNOBS

    form = load_flow_from_entrypoint(str(ROOT / "flows/bootstrap.py:bootstrap")).parameters.model_dump()
    fields = form["properties"]
    assert set(KNOBS) < set(fields) and all(fields[name].get("description") for name in fields)
    assert fields["learning_rate"]["description"].startswith("AdamW learning rate")
    assert {"exclusiveMinimum": 0, "type": "number"} in fields["learning_rate"]["anyOf"]
    assert {"enum": ["dpo", "grpo", "rloo"], "type": "string"} in fields["method"]["anyOf"]
    judges = [kind.get("$ref") for kind in fields["training_judge"]["anyOf"]]
    assert "#/definitions/AIJudgeConfig" in judges and "AIJudgeConfig" in form["definitions"]  # typed, per kind


def test_knobs_left_empty_keep_the_yaml_and_another_method_keeps_what_it_shares():
    from flows.bootstrap import knob_overrides

    overrides = knob_overrides({"method": "grpo", "learning_rate": 3e-4, "samples_per_prompt": 6})
    assert overrides == {"training.kind": "grpo", "training.learning_rate": 3e-4, "generation.samples_per_prompt": 6}
    shipped, cfg = load_config(ROOT / "configs" / "smoke.yaml"), load_config(ROOT / "configs" / "smoke.yaml", overrides)
    assert (cfg.training.kind, cfg.training.learning_rate, cfg.generation.samples_per_prompt) == ("grpo", 3e-4, 6)
    assert cfg.training.num_train_epochs == shipped.training.num_train_epochs  # shared: the YAML's
    assert cfg.training.beta == 0.05 and cfg.rounds == shipped.rounds  # GRPO's own default; rounds left empty


def test_cli_refuses_approval_without_a_reachable_prefect_server(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["gate"]["require_approval"] = True
    (tmp_path / "approval.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(tmp_path / "approval.yaml"), "--store", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    assert proc.returncode == 2
    assert "gate.require_approval" in proc.stderr and "PREFECT_API_URL" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["approval.yaml", "prefect"]  # no store, no runs


def test_overrides_set_values_by_dotted_path_and_errors_name_the_path(tmp_path):
    cfg = load_config(ROOT / "configs" / "smoke.yaml", {"rounds": 4, "training.learning_rate": 1e-4})
    assert (cfg.rounds, cfg.training.learning_rate, cfg.training.beta) == (4, 1e-4, 0.1)
    with pytest.raises(ConfigError, match=r"training\.learnig_rate: Extra inputs"):
        load_config(ROOT / "configs" / "smoke.yaml", {"training.learnig_rate": 1e-4})
    with pytest.raises(ConfigError, match=r"override seed\.x: seed is not a section"):
        load_config(ROOT / "configs" / "smoke.yaml", {"seed.x": 1})
    for kind, missing in (("server", "urls"), ("vllm", "samples_per_prompt")):  # each kind's path without the kind
        with pytest.raises(ConfigError) as refused:
            load_config(ROOT / "configs" / "smoke.yaml", {"generation.kind": kind, f"generation.{missing}": None})
        assert f"generation.{missing}: " in str(refused.value) and f".{kind}." not in str(refused.value)


def test_cli_set_overrides_are_validated_before_any_work(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "configs/smoke.yaml",
            "--store",
            str(tmp_path),
            "--set",
            "training.learning_rate=1e-4",
            "--set",
            "training.num_train_epochs=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    assert proc.returncode == 2
    assert "training.num_train_epochs: Input should be greater than 0" in proc.stderr
    assert "learning_rate" not in proc.stderr  # 1e-4 was read as a number and accepted
    assert list(tmp_path.iterdir()) == []  # nothing written, not even Prefect's home


def test_a_renamed_key_names_its_new_place(tmp_path):
    for old, new in [("training", "method: grpo"), ("generation", "backend: vllm"), ("training", "device_map: cpu")]:
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, f"name: x\n{old}:\n  {new}\n"))
        key = f"{old}.{new.split(':')[0]}"
        assert f"{key}: renamed; use {RENAMED[key]}" in str(err.value)
    assert RENAMED["training.device_map"] == "models.device"


def test_each_training_kind_has_only_its_own_fields(tmp_path):
    dpo = load_config(write(tmp_path, "name: x\ntraining: {beta: 0.2, max_length: 128}\n")).training
    assert (dpo.kind, dpo.beta, dpo.max_length) == ("dpo", 0.2, 128)
    grpo = load_config(write(tmp_path, "name: x\ntraining: {kind: grpo, num_generations: 2}\n")).training
    assert (grpo.kind, grpo.beta) == ("grpo", 0.05)
    with pytest.raises(ConfigError, match=r"training\.num_generations: Extra inputs are not permitted"):
        load_config(write(tmp_path, "name: x\ntraining: {kind: dpo, num_generations: 2}\n"))
    with pytest.raises(ConfigError, match=r"training\.max_length: Extra inputs are not permitted"):
        load_config(write(tmp_path, "name: x\ntraining: {kind: rloo, max_length: 2}\n"))


def test_a_deeply_nested_yaml_is_one_line_not_a_traceback(tmp_path):
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(write(tmp_path, "name: x\nseed: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_the_bootstrap_id_leaves_out_rounds_gate_and_workdir(tmp_path):
    base = load_config(ROOT / "configs" / "smoke.yaml")
    same = load_config(ROOT / "configs" / "smoke.yaml", {"rounds": 5, "workdir": "elsewhere", "gate.on_block": "stop"})
    assert same.digest() == base.digest()
    assert load_config(ROOT / "configs" / "smoke.yaml", {"seed": 1}).digest() != base.digest()


def test_serve_refuses_without_a_prefect_server(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    assert proc.returncode == 2 and "PREFECT_API_URL" in proc.stderr


def readme_yaml(containing: str) -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```yaml\n")[1:]]
    [example] = [block for block in blocks if containing in block]
    return example


def test_the_readme_remote_judge_example_is_a_valid_config(tmp_path):
    cfg = load_config(write(tmp_path, "name: readme\n" + readme_yaml("kind: remote")))
    assert cfg.evaluation.judge.kind == "remote" and cfg.evaluation.judge.api_key_env == "JUDGE_API_KEY"


def test_the_readme_scaling_example_is_a_valid_config(tmp_path):
    cfg = load_config(write(tmp_path, "name: readme\n" + readme_yaml("execution:")))
    assert (cfg.execution.engine, cfg.execution.shards, cfg.training.launcher) == ("ray", 2, "accelerate")
    assert cfg.generation.kind == "server" and len(cfg.generation.urls) == 2


def test_the_readme_reward_model_examples_are_valid_configs(tmp_path):
    cfg = load_config(write(tmp_path, "name: readme\n" + readme_yaml("reward_model:")))
    assert cfg.training.reward == "reward_model" and cfg.reward_model.base == "policy"
    assert cfg.gate.rules[0].key == "reward/reward_hacking"
    cfg = load_config(write(tmp_path, "name: readme\n" + readme_yaml("kind: revise")))
    assert (cfg.pairs.kind, cfg.pairs.reviser_runtime) == ("revise", "llama_cpp")


def test_rewarding_with_a_reward_model_needs_one_to_train(tmp_path):
    text = "name: x\ntraining: {kind: rloo, reward: reward_model}\n"
    with pytest.raises(ConfigError, match="no reward_model section"):
        load_config(write(tmp_path, text))


def test_weighted_judge_needs_one_positive_weight_per_judge(tmp_path):
    text = "name: x\njudge: {kind: weighted, judges: [{kind: verifier}, {kind: biased, bias: length}], weights: [1]}\n"
    with pytest.raises(ConfigError, match="judge: .*weights must be 2 positive numbers"):
        load_config(write(tmp_path, text))


def test_eval_judge_hidden_in_a_panel_route_still_counts_as_training(tmp_path):
    text = "name: x\njudge: {kind: panel, by_cohort: {benign: {kind: ai, model: gemma3-270m}}}\n"
    with pytest.raises(ConfigError, match="evaluation judge must differ"):
        load_config(write(tmp_path, text))


def test_the_rlaif_flagship_differs_from_the_rlvr_one_in_its_judges_and_never_hands_a_gold_check_to_training():
    """configs/efficacy-rlaif.yaml: every training cohort that carries a check goes to the AI judge (a panel's
    by_cohort comes before its verifier), the refusal cohorts to the refusal classifier; the rest is the RLVR
    flagship's, so the two rows share one evaluation."""
    from components.data import load_prompts

    rlaif, rlvr = load_config(ROOT / "configs/efficacy-rlaif.yaml"), load_config(ROOT / "configs/efficacy.yaml")
    checked = {row["cohort"] for row in load_prompts(ROOT / rlaif.data.train_prompts) if row["check"]}
    assert checked and checked <= set(rlaif.judge.by_cohort)
    assert {judge.kind for judge in rlaif.judge.by_cohort.values()} == {"ai"} and rlaif.judge.default.kind == "refusal"
    ignored = {"name": True, "judge": True, "evaluation": {"judge"}}
    assert rlaif.model_dump(exclude=ignored) == rlvr.model_dump(exclude=ignored)


def test_the_checks_only_rlaif_flagship_is_the_rlaif_one_with_its_fallback_off():
    rlaif, checks = (
        load_config(ROOT / "configs/efficacy-rlaif.yaml"),
        load_config(ROOT / "configs/efficacy-rlaif-checks.yaml"),
    )
    assert {judge.fallback for judge in checks.judge.by_cohort.values()} == {"none"}
    as_rlaif = checks.model_dump(exclude={"name"})
    for judge in as_rlaif["judge"]["by_cohort"].values():
        judge["fallback"] = "pointwise"
    assert as_rlaif == rlaif.model_dump(exclude={"name"})


def test_the_task_checked_rlaif_flagship_is_the_checks_only_one_with_ifevals_task_checked():
    checks, task = (
        load_config(ROOT / "configs/efficacy-rlaif-checks.yaml"),
        load_config(ROOT / "configs/efficacy-rlaif-task.yaml"),
    )
    assert {c: j.check_the_task for c, j in task.judge.by_cohort.items()} == {
        "ifeval": True,
        "arithmetic": False,
        "grounded": False,
        "injection": False,
    }
    as_checks = task.model_dump(exclude={"name"})
    as_checks["judge"]["by_cohort"]["ifeval"]["check_the_task"] = False
    assert as_checks == checks.model_dump(exclude={"name"})


def test_cohorts_routed_to_equal_judge_configs_share_one_judge():
    from components.build_judges import make_judge
    from components.config.judges import PanelJudgeConfig
    from components.models import Policy

    panel = PanelJudgeConfig(
        default={"kind": "refusal"},
        by_cohort={
            "a": {"kind": "biased", "bias": "short"},
            "b": {"kind": "biased", "bias": "short"},
            "c": {"kind": "biased", "bias": "length"},
        },
    )
    judge = make_judge(panel, Policy("unused"), load_config(ROOT / "configs/smoke.yaml").models)
    assert judge.by_cohort["a"] is judge.by_cohort["b"] and judge.by_cohort["a"] is not judge.by_cohort["c"]

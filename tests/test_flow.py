"""The bootstrap flow for real: Prefect (temporary server), MLflow (sqlite), DPO, on the tiny random model."""

import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from datasets import load_from_disk
from mlflow import MlflowClient
from test_report import assert_tables_are_whole

from components.config.loading import load_config
from components.config.strict import Strict
from registry import compare, lineage, versions

ROOT = Path(__file__).resolve().parent.parent
NO_RULES = {"rules": []}  # every trained round is promoted
# A reward model each round too: a few steps on the pairs so far, half the prompts held out.
TINY_REWARD_MODEL = {"heldout_fraction": 0.5, "max_steps": 2, "per_device_train_batch_size": 2, "lora_r": 4}
ALWAYS_BLOCK = {"rules": [{"metric": "length/length_ratio", "op": "<=", "threshold": -1}]}  # a ratio is never negative


def run(config_path: Path, store: Path, **kw):
    from flows.bootstrap import bootstrap

    return bootstrap(str(config_path), store=str(store), **kw)


def stage_stamps(out: Path) -> dict[Path, int]:
    """When each stage of each round (not the superseded ones) was written."""
    rounds = [d for d in out.glob("round-*") if d.name.removeprefix("round-").isdigit()]
    return {p: p.stat().st_mtime_ns for d in rounds for p in d.iterdir() if p.name != "report"}


@contextmanager
def config_reads():
    """Record which config fields (class name, field, the value's repr) the code reads: components/, flows/ and
    registry/, but not the schema's own files (components/config/), whose validators and loader read every field."""
    reads: set[tuple[str, str, str]] = set()
    layers = tuple(str(ROOT / layer) for layer in ("components", "flows", "registry"))
    schema = str(ROOT / "components" / "config")

    def recording(self, name):
        value = object.__getattribute__(self, name)
        if name in type(self).model_fields:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(layers) and not caller.startswith(schema):
                reads.add((type(self).__name__, name, repr(value)))
        return value

    Strict.__getattribute__ = recording
    try:
        yield reads
    finally:
        del Strict.__getattribute__


@pytest.fixture(scope="module")
def tiny_run_and_reads(prefect_harness, write_tiny_config, tmp_path_factory):
    """One real 2-round bootstrap on the tiny model, shared by this module's tests, and the config fields it read.
    With no gate rules both rounds are promoted, so the second starts from the first's adapter."""
    store = tmp_path_factory.mktemp("tiny-store")
    config = write_tiny_config(store, gate=NO_RULES, reward_model=TINY_REWARD_MODEL)
    with config_reads() as reads:
        result = run(config, store)
    return (result, config, store), reads


@pytest.fixture(scope="module")
def tiny_run(tiny_run_and_reads):
    """(result, config, store) of the shared bootstrap."""
    return tiny_run_and_reads[0]


def test_bootstrap_runs_rounds_logs_lineage_and_resumes(tiny_run):
    result, config, store = tiny_run
    out = Path(result.workdir)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "round-1", "round-2"]
    assert (out.parent / "memo" / "memo.sqlite").exists()  # the run store's memo, beside the bootstraps
    assert [(r.k, r.decision.promote) for r in result.rounds] == [(1, True), (2, True)]
    for r in result.rounds:
        stages = sorted(p.name for p in (out / f"round-{r.k}").iterdir())
        assert stages == [
            "adapter",
            "champion.json",
            "eval",
            "generations",
            "gold.json",
            "pairs",
            "report",
            "review-queue.json",
            "reward_model",
        ]
        markdown = (out / f"round-{r.k}" / "report" / "report.md").read_text()
        assert "## Gate rules" in markdown
        assert_tables_are_whole(markdown)
    assert result.rounds[1].champion.adapters == (str(out / "round-1" / "adapter"), str(out / "round-2" / "adapter"))
    drift = result.rounds[0].metrics
    assert math.isfinite(drift["drift/kl_per_token"]) and math.isfinite(drift["length/challenger_p90_length"])
    assert {"judge/judge_policy_agreement", "judge/judge_gold_agreement", "train/train_steps", "train/pairs"} <= set(
        drift
    )
    assert 0 <= drift["judge/judge_order_consistency"] <= 1 and 0 <= drift["judge/judge_abstention_rate"] <= 1
    pairs = load_from_disk(str(out / "round-1" / "pairs"))
    by_self = sum(j == "ai:self" and not a for j, a in zip(pairs["judge"], pairs["abstained"], strict=True))
    assert drift["train/pairs_model_judged"] == by_self  # what the verifier decided is not counted
    assert {"judge/judge_length_slope", "judge/self_cross_agreement", "judge/self_judge_order_consistency"} <= set(
        drift
    )
    assert drift["judge/win_rate_vs_base"] == drift["judge/win_rate"]  # round 1: the champion is the base
    assert drift["task/task_completion_delta_vs_base"] == drift["task/task_completion_delta"]

    client = MlflowClient(lineage.tracking_uri_for(store))
    runs = client.search_runs([result.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["round-1", "round-2", result.bootstrap_id]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == "tiny"
    assert "rounds" not in parent.data.params and parent.data.tags["ratchet.rounds"] == "2"
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"train_prompts", "eval_prompts"}
    round_1 = client.search_runs([result.experiment_id], "tags.`ratchet.round` = '1'")[0]
    assert {d.dataset.name for d in round_1.inputs.dataset_inputs} == {"generations", "pairs", "eval"}
    history = client.get_metric_history(parent.info.run_id, "task/task_completion_delta")
    assert sorted(m.step for m in history) == [1, 2]
    for child in (r for r in runs if r.info.run_name.startswith("round-")):
        assert child.data.tags["ratchet.decision"].startswith("promoted")
        assert child.data.tags["prefect.flow_run_id"]  # MLflow -> Prefect
        assert child.data.tags["ratchet.generation_backend"] == "transformers"  # as the tiny config sets
    assert versions.current_champion(client, "ratchet-tiny") == "2"
    # Version 2's chain by MLflow model URIs: version 1's adapter, then its own (loadable on any machine).
    first, second = (versions.checkpoint(client, "ratchet-tiny", v)["adapter_uris"] for v in ("1", "2"))
    assert second == [*first, client.get_model_version("ratchet-tiny", "2").source] and len(first) == 1
    assert_prefect_side(result, client)
    # The reward model of each round: trained on the pairs so far, measured, registered with its lineage, and
    # scoring the held-out answers for the reward-hacking rule.
    for r in result.rounds:
        assert r.metrics["reward/rm_rounds"] == r.k and r.metrics["reward/rm_train_steps"] == 2
        assert {"reward/rm_gold_accuracy_ci_low", "reward/rm_score_delta_vs_base_ci_low"} <= set(r.metrics)
        assert r.metrics["reward/reward_hacking"] in (0.0, 1.0)
    rewards = sorted(client.search_model_versions("name = 'ratchet-tiny-reward'"), key=lambda v: int(v.version))
    assert [json.loads(v.tags["rounds"]) for v in rewards] == [[1], [1, 2]]
    assert {v.tags["base"] for v in rewards} == {result.rounds[0].champion.base}
    assert json.loads(rewards[0].tags["labelled_by"]) and json.loads(rewards[0].tags["training_judge"])["kind"]

    # A second run of the same config resumes: same runs, same outputs, no stage rewritten.
    stamps = stage_stamps(out)
    again = run(config, store)
    assert again.parent_run_id == result.parent_run_id
    assert [(r.k, r.decision, r.metrics) for r in again.rounds] == [(r.k, r.decision, r.metrics) for r in result.rounds]
    assert stage_stamps(out) == stamps
    assert len(client.search_runs([result.experiment_id])) == 3
    registered = client.search_model_versions("name = 'ratchet-tiny'")
    assert len(registered) == 2
    assert json.loads(registered[0].tags["training_judge"])["kind"] == "panel"  # checkpoint -> the judge behind it
    assert registered[0].tags["bootstrap_id"] == result.bootstrap_id


def fields_of(section: Strict, path: str = ""):
    """(path, class name, field, the value's repr) of every field of a config section and of those within it."""
    for name in type(section).model_fields:
        value = getattr(section, name)
        yield f"{path}{name}", (type(section).__name__, name, repr(value))
        for i, inner in enumerate(value if isinstance(value, list | tuple) else [value]):
            if isinstance(inner, Strict):
                yield from fields_of(inner, f"{path}{name}{f'[{i}]' if isinstance(value, list | tuple) else ''}.")


# Fields of the tiny config's sections that its bootstrap has no occasion to read, and when the code reads them.
REVISE = "with pairs.kind: revise"
LENGTH_CONTROLLED, LLAMA_CPP = "with length_controlled: true", "with runtime: llama_cpp"
PROGRAM = "with verdict: program (what no written check separates)"
RAY = "with execution.engine: ray (Ray's resources for each shard task)"
NOT_READ_BY_THIS_RUN = {
    "judge.default.length_scale_words": LENGTH_CONTROLLED,
    "judge.default.context_tokens": LLAMA_CPP,
    "evaluation.judge.length_scale_words": LENGTH_CONTROLLED,
    "evaluation.judge.context_tokens": LLAMA_CPP,
    "judge.default.fallback": PROGRAM,
    "evaluation.judge.fallback": PROGRAM,
    "judge.default.check_the_task": PROGRAM,
    "evaluation.judge.check_the_task": PROGRAM,
    **dict.fromkeys(
        [f"pairs.{f}" for f in ("reviser", "reviser_runtime", "constitution", "max_new_tokens", "check_revisions")]
        + [f"pairs.reviser_{f}" for f in ("temperature", "batch_size", "context_tokens")],
        REVISE,
    ),
    "training.num_processes": "with training.launcher: accelerate",
    "gate.on_block": "after a blocked round",
    "gate.approval_timeout": "with gate.require_approval: true",
    **{
        f"execution.{stage}{field}": RAY
        for stage in ("generate", "judge")
        for field in ("", ".cpus", ".gpus", ".memory_gb")
    },
}


def test_the_bootstrap_reads_every_field_of_the_sections_it_uses(tiny_run_and_reads):
    """What a config sets reaches the code: each field is read, with the config's value, by the code that uses it.
    A field the run never reads (the code used a default of its own, or another field) is a setting that does
    nothing. Checked on the kinds this config uses (a transformers sampler, a
    panel with the self-judge, DPO, a reward model, an AI evaluation judge); test_defaults.py finds every other kind's
    fields read somewhere in the code, and the values of some reaching what build makes."""
    (_, config, _), reads = tiny_run_and_reads
    # No `kind` is read: it chose the class (components/build*.py), whose fields are.
    unread = [p for p, read in fields_of(load_config(config)) if read not in reads and read[1] != "kind"]
    unexpected = [p for p in unread if p not in NOT_READ_BY_THIS_RUN]
    assert not unexpected, "never read: " + ", ".join(unexpected)


def assert_prefect_side(result, mlflow_client: MlflowClient) -> None:
    """Flow runs are named and tagged, each round published its report and cohort table, and the report links the
    MLflow round run (Prefect -> MLflow)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterTags

    from flows.reporting import artifact_key

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["tiny"])))
        names = {r.name for r in runs}
        assert {"round-1", "round-2"} <= names and any(n.startswith("bootstrap-tiny-") for n in names)
        slug = artifact_key(result.bootstrap_id)
        for r in result.rounds:
            key = f"{slug}-round-{r.k}"
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert found and found[0].type == "markdown"
            round_run = mlflow_client.search_runs([result.experiment_id], f"tags.`ratchet.round` = '{r.k}'")[0]
            assert round_run.info.run_id in found[0].data and "data:image/png;base64," in found[0].data
            assert_tables_are_whole(found[0].data)  # as Prefect holds it, not only as written
            table = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{key}-cohorts"]))
            )
            assert table and table[0].type == "table" and "ifeval" in table[0].data
        link = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{slug}-mlflow"])))
        assert link and "compareRunsMode=CHART" in link[0].data  # Prefect stores link artifacts as markdown


def test_more_rounds_extend_the_bootstrap_without_rerunning_the_first(prefect_harness, write_tiny_config, tmp_path):
    config = write_tiny_config(tmp_path, name="tiny-extend", rounds=1, gate=NO_RULES)
    first = run(config, tmp_path)
    out = Path(first.workdir)
    stamps = stage_stamps(out)
    extended = run(config, tmp_path, rounds=2)
    assert extended.bootstrap_id == first.bootstrap_id and extended.parent_run_id == first.parent_run_id
    assert [r.k for r in extended.rounds] == [1, 2] and extended.rounds[0].metrics == first.rounds[0].metrics
    assert {p: t for p, t in stage_stamps(out).items() if p.parent.name == "round-1"} == stamps  # round 1 not redone
    assert (out / "round-2" / "adapter" / "adapter_model.safetensors").exists()


def test_a_changed_gate_rule_re_decides_without_retraining(prefect_harness, write_tiny_config, tmp_path):
    """Round 1 promoted, round 2 trained from it. Then a rule that blocks everything: round 1 is re-decided from its
    stored metrics (nothing retrained), the champion alias goes back to the base model, and round 2, whose
    champion is now the base, is run again from it; its first run is kept aside as superseded. Back to no rules,
    the first history returns, and nothing is trained at all."""
    config = write_tiny_config(tmp_path, name="tiny-gate", gate=NO_RULES)
    promoted = run(config, tmp_path)
    out = Path(promoted.workdir)
    first_history = stage_stamps(out)
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    assert versions.current_champion(client, "ratchet-tiny-gate") == "2"

    config.write_text(config.read_text().replace("rules: []", f"rules: {json.dumps(ALWAYS_BLOCK['rules'])}"))
    blocked = run(config, tmp_path)
    assert blocked.bootstrap_id == promoted.bootstrap_id
    assert [r.decision.promote for r in blocked.rounds] == [False, False]
    assert blocked.rounds[0].metrics == promoted.rounds[0].metrics
    round_1 = {p: t for p, t in first_history.items() if p.parent.name == "round-1"}
    assert {p: t for p, t in stage_stamps(out).items() if p.parent.name == "round-1"} == round_1  # not retrained
    [superseded] = out.glob("round-2.superseded-*")
    assert (superseded / "adapter").exists() and (out / "round-2" / "adapter").exists()
    assert json.loads((out / "round-2" / "champion.json").read_text())["adapters"] == []
    assert versions.current_champion(client, "ratchet-tiny-gate") is None  # round 1's promotion was taken back
    [run_1] = client.search_runs([promoted.experiment_id], "tags.`ratchet.round` = '1'")
    assert run_1.data.tags["ratchet.decision"].startswith("blocked: length/length_ratio <= -1")
    assert [r["decision"][:7] for r in compare.round_table(client, "tiny-gate")[1]] == ["blocked", "blocked"]

    config.write_text(config.read_text().replace(f"rules: {json.dumps(ALWAYS_BLOCK['rules'])}", "rules: []"))
    again = run(config, tmp_path)
    assert [r.decision.promote for r in again.rounds] == [True, True]
    assert [r.metrics for r in again.rounds] == [r.metrics for r in promoted.rounds]  # the first history, back
    assert stage_stamps(out) == first_history  # round 2 taken back from aside, not trained a third time
    assert versions.current_champion(client, "ratchet-tiny-gate") == "2"


def test_a_round_with_nothing_to_train_is_kept_by_the_gate(prefect_harness, write_tiny_config, tmp_path):
    """A judge that finds nothing to prefer (the random model never refuses) abstains on every pair."""
    config = write_tiny_config(tmp_path, name="tiny-idle", rounds=1, judge={"kind": "biased", "bias": "refusal"})
    [idle] = run(config, tmp_path).rounds
    assert not idle.decision.promote and idle.decision.deciding_rule == "nothing to train"
    assert idle.metrics["train/abstention_rate"] == 1.0 and "judge/win_rate" not in idle.metrics
    round_dir = next((tmp_path / "runs").glob("tiny-idle-*/round-1"))
    assert sorted(p.name for p in round_dir.iterdir()) == [
        "champion.json",
        "generations",
        "gold.json",
        "pairs",
        "report",
        "review-queue.json",
    ]


def test_compare_prints_the_rounds_mlflow_holds(tiny_run):
    from typer.testing import CliRunner

    from flows.cli import app

    result, _, store = tiny_run
    out = CliRunner().invoke(app, ["compare", "tiny", "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert f"bootstrap {result.bootstrap_id}" in out.output and "delta (95% CI)" in out.output
    lines = [line for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 2
    for line, r in zip(lines, result.rounds, strict=True):
        assert line.split()[0] == str(r.k) and r.decision.reason in line
        assert f"{100 * r.metrics['judge/win_rate']:.1f}%" in line
    missing = CliRunner().invoke(app, ["compare", "nope", "--store", str(store)])
    assert missing.exit_code == 2 and "no MLflow experiment named 'nope'" in missing.output


def test_evaluate_compares_two_registered_checkpoints(tiny_run):
    from flows.evaluate import evaluate_checkpoints

    result, config, store = tiny_run
    evaluation = evaluate_checkpoints(str(config), "1", "base", str(store))
    client = MlflowClient(lineage.tracking_uri_for(store))
    [run_] = client.search_runs([result.experiment_id], "tags.`ratchet.kind` = 'evaluation'")
    assert run_.info.run_name == "evaluate v1-vs-base" and run_.info.status == "FINISHED"
    round_1 = result.rounds[0].metrics
    # The same two policies as round 1's evaluation, greedy: the same numbers.
    assert evaluation["metrics"]["task/task_completion_delta"] == pytest.approx(round_1["task/task_completion_delta"])
    assert run_.data.metrics["length/challenger_mean_length"] == pytest.approx(round_1["length/challenger_mean_length"])
    with pytest.raises(versions.MlflowException):
        evaluate_checkpoints(str(config), "99", "base", str(store))


def assert_mlflow_serves(model_uri: str, tracking_uri: str, log: Path) -> None:
    """`mlflow models serve` as the README shows it answers `/invocations` with a completion."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from components.process_group import free_port

    port, bin_dir = free_port(), str(Path(sys.executable).parent)
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    command = [f"{bin_dir}/mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-p", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        asked = json.dumps({"inputs": ["Topic 1: tell me"]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", asked, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            [completion] = json.loads(answer.read())["predictions"]
        assert completion.startswith("Topic 1: tell me") and len(completion) > len("Topic 1: tell me")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def tiny_export(tiny_run, tmp_path_factory):
    """`ratchet export` of the shared bootstrap's version 2, with the default GGUF type: (directory, its output)."""
    from typer.testing import CliRunner

    from flows.cli import app

    _, config, store = tiny_run
    out = tmp_path_factory.mktemp("exports") / "v2"
    done = CliRunner().invoke(app, ["export", str(config), "--version", "2", "--out", str(out), "--store", str(store)])
    assert done.exit_code == 0, done.output
    return out, done.output


def test_export_writes_the_version_merged_and_as_its_adapter_chain_and_records_both(tiny_run, tiny_export, tmp_path):
    """The merged checkpoint is the champion Ratchet evaluates (its adapters merged in order): the same logits to
    the bit; the chain, applied in its order on the base, gives them too."""
    import torch
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from components.config.experiment import ModelsConfig
    from components.memo import directory_digest
    from components.models import Policy, load_policy, load_tokenizer
    from flows.cli import app

    result, config, store = tiny_run
    out, output = tiny_export
    chain = json.loads((out / "adapters" / "chain.json").read_text())
    assert chain["adapters"] == ["1", "2"]
    champion = result.rounds[1].champion
    tokenizer = load_tokenizer(champion.base)
    ids = tokenizer("Topic 1: tell me about it.", return_tensors="pt").input_ids
    cpu = ModelsConfig(device="cpu", dtype="float32")
    with torch.no_grad():
        in_memory = load_policy(champion, cpu)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)(ids).logits
        adapters = tuple(str(out / "adapters" / name) for name in chain["adapters"])
        from_chain = load_policy(Policy(chain["base"], adapters), cpu)(ids).logits
    assert torch.equal(merged, in_memory) and torch.equal(from_chain, in_memory)
    assert load_tokenizer(str(out / "merged")).chat_template == tokenizer.chat_template

    client = MlflowClient(lineage.tracking_uri_for(store))
    [export] = client.search_runs([result.experiment_id], "tags.`ratchet.kind` = 'export'")
    params = export.data.params
    assert params["version"] == "2" and params["merged.sha256"] == directory_digest(out / "merged")
    assert params["adapters.path"] == str(out / "adapters")
    import mlflow.transformers

    served = mlflow.transformers.load_model("models:/ratchet-tiny-merged/1", return_type="components")
    with torch.no_grad():
        assert torch.equal(served["model"].float()(ids).logits, in_memory)
    assert client.get_model_version("ratchet-tiny-merged", "1").tags["adapter_version"] == "2"
    assert "mlflow models serve -m models:/ratchet-tiny-merged/1" in output
    assert_mlflow_serves("models:/ratchet-tiny-merged/1", lineage.tracking_uri_for(store), tmp_path / "serve.log")
    again = CliRunner().invoke(app, ["export", str(config), "--version", "2", "--out", str(out), "--store", str(store)])
    assert again.exit_code == 2 and "exists" in again.output
    base = CliRunner().invoke(
        app, ["export", str(config), "--version", "base", "--out", str(tmp_path / "b"), "--store", str(store)]
    )
    assert base.exit_code == 2 and "no adapter" in base.output and not (tmp_path / "b").exists()
    bad = CliRunner().invoke(app, ["export", str(config), "--gguf", "q5", "--out", str(tmp_path / "q")])
    assert bad.exit_code == 2 and "--gguf q5: not one of" in bad.output and not (tmp_path / "q").exists()


def test_the_exported_model_card_is_written_from_what_mlflow_recorded(tiny_run, tiny_export):
    """Hugging Face's front matter, and the rounds' figures as MLflow holds them, to the digit shown."""
    import yaml

    from components.metrics import show

    result, _, store = tiny_run
    out, _ = tiny_export
    card = (out / "merged" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and meta["license"] == "other" and "dpo" in meta["tags"]
    assert "base_model" not in meta  # the tiny model is a local directory, not a Hub id
    client = MlflowClient(lineage.tracking_uri_for(store))
    for r in result.rounds:
        [run] = client.search_runs([result.experiment_id], f"tags.`ratchet.round` = '{r.k}'")
        delta = run.data.metrics["task/task_completion_delta_vs_base"]
        low, high = (run.data.metrics[f"task/task_completion_delta_vs_base_ci_{end}"] for end in ("low", "high"))
        row = next(line for line in card.splitlines() if line.startswith(f"| {r.k} |"))
        assert f"{show(delta, 'points')} ({show(low, 'points')} to {show(high, 'points')})" in row
        assert row.endswith(f"| {run.data.tags['ratchet.decision']} |")
    assert "## Known limits" in card and "_No rule was checked._" in card  # the tiny run has no gate rules
    assert f"bootstrap `{result.bootstrap_id}`" in card


GGUF_PROMPTS = ["Topic 1: tell me about it.", "Name a colour.", "Write a haiku about rain.", "What is 2 + 2?"]


def test_the_gguf_export_answers_through_llama_cpp_as_the_champion_does(tiny_run, tiny_export, tmp_path):
    """llama.cpp's next token along the champion's own greedy answers (the adapters on the base, in memory) is the
    champion's at >= 90% of the positions with the default q8_0, and >= 70% with q4_k_m (quantisation moves this
    random model's near-flat logits; an f32 GGUF agreed at all of them when this was written)."""
    import torch

    from components.config.experiment import ModelsConfig
    from components.export import save_gguf
    from components.memo import directory_digest
    from components.models import load_policy, load_tokenizer

    result, _, store = tiny_run
    out, output = tiny_export
    assert (out / "gguf" / "Modelfile").read_text() == 'FROM ./model-q8_0.gguf\nPARAMETER stop "<|im_end|>"\n'
    champion = result.rounds[1].champion
    tokenizer, model = load_tokenizer(champion.base), load_policy(champion, ModelsConfig(device="cpu", dtype="float32"))
    answers = []
    for prompt in GGUF_PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = list(ids["input_ids"])
        with torch.no_grad():
            greedy = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
        answers.append((ids, greedy[0, len(ids) :].tolist()))

    expected = [token for _, answer in answers for token in answer]

    def agreement(gguf: Path) -> float:
        found = [token for row in llama_cpp_next_tokens(gguf, answers) for token in row]
        return sum(p == a for p, a in zip(found, expected, strict=True)) / len(expected)

    assert agreement(out / "gguf" / "model-q8_0.gguf") >= 0.9
    assert agreement(save_gguf(out / "merged", tmp_path / "q4", "q4_k_m")) >= 0.7  # 54 of 64 on the first try
    assert sorted(p.name for p in (tmp_path / "q4").iterdir()) == ["Modelfile", "model-q4_k_m.gguf"]

    [export] = MlflowClient(lineage.tracking_uri_for(store)).search_runs(
        [result.experiment_id], "tags.`ratchet.kind` = 'export'"
    )
    assert export.data.params["gguf.sha256"] == directory_digest(out / "gguf")
    assert f"gguf: {out / 'gguf'}" in output


def llama_cpp_next_tokens(gguf: Path, answers: list[tuple[list[int], list[int]]]) -> list[list[int]]:
    """For each (prompt, answer) of token ids, llama.cpp's most likely token at each of the answer's positions."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    try:
        found = []
        for prompt, answer in answers:
            llm.reset()
            llm.eval(prompt + answer)
            scores = np.asarray(llm.scores[len(prompt) - 1 : len(prompt) + len(answer) - 1])
            found.append(scores.argmax(axis=-1).tolist())
        return found
    finally:
        llm.close()


def test_promote_and_rollback_by_hand_are_recorded(tiny_run):
    from typer.testing import CliRunner

    from flows.cli import app

    result, _, store = tiny_run
    client = MlflowClient(lineage.tracking_uri_for(store))
    out = CliRunner().invoke(app, ["promote", "tiny", "1", "--reason", "looked fine", "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert versions.current_champion(client, "ratchet-tiny") == "1"
    back = CliRunner().invoke(app, ["rollback", "tiny", "--store", str(store)])
    assert back.exit_code == 0, back.output
    assert versions.current_champion(client, "ratchet-tiny") is None and "now the base model" in back.output
    moves = client.search_runs([result.experiment_id], "tags.`ratchet.kind` = 'alias-move'")
    assert sorted(m.data.tags["ratchet.action"] for m in moves) == ["promote", "rollback"]
    bad = CliRunner().invoke(app, ["promote", "tiny", "42", "--store", str(store)])
    assert bad.exit_code == 2 and "42" in bad.output


def test_approval_pauses_a_passing_round_until_a_person_decides(prefect_harness, write_tiny_config, tmp_path):
    """Round 1 is approved and becomes champion; round 2 is rejected and the champion stays."""
    import threading
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    gate = {"rules": [], "require_approval": True, "approval_timeout": 300}
    config = write_tiny_config(tmp_path, name="tiny-approval", gate=gate)
    answers = [
        {"approve": True, "reviewer": "ada", "note": ""},
        {"approve": False, "reviewer": "bob", "note": "answers got longer"},
    ]
    answered, done = [], threading.Event()

    def reviewer() -> None:
        paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
        with get_client(sync_client=True) as client:
            while not done.is_set() and answers:
                for flow_run in client.read_flow_runs(flow_run_filter=paused):
                    if flow_run.id not in answered:
                        answered.append(flow_run.id)
                        resume_flow_run(flow_run.id, run_input=answers.pop(0))
                time.sleep(0.5)

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    try:
        result = run(config, tmp_path)
    finally:
        done.set()
    assert len(answered) == 2
    first, second = (r.decision for r in result.rounds)
    assert first.promote and first.approval == {"approved": True, "reviewer": "ada", "note": ""}
    assert not second.promote and second.deciding_rule == "human review"
    assert second.reason == "rejected by bob: answers got longer (gate had passed)"
    client = MlflowClient(lineage.tracking_uri_for(tmp_path))
    [child] = client.search_runs([result.experiment_id], "tags.`ratchet.round` = '2'")
    assert child.data.tags["ratchet.decision"] == second.reason
    assert versions.current_champion(client, "ratchet-tiny-approval") == "1"
    # A re-run keeps the reviewed decisions: nobody is asked again.
    again = run(config, tmp_path)
    assert [r.decision for r in again.rounds] == [first, second] and len(answered) == 2

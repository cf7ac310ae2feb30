"""The reward model on a random-init tiny Llama: trained with TRL's RewardTrainer, it must rank held-out pairs it
never saw above chance."""

import json
from pathlib import Path

import pytest

from components.config.experiment import ModelsConfig, RewardModelConfig
from components.data import save_rows, user_message
from components.evaluation.measures import mean_ci
from components.training.reward_model import RewardModel, held_out, judged_pairs, train_reward_model

CPU = ModelsConfig(device="cpu")
CI = lambda values: mean_ci(values, 0.95, 200)  # noqa: E731


def number_pairs(n: int, start: int = 0) -> list[dict]:
    """Arithmetic prompts: the right number is chosen against a refusal (a pattern a tiny model can learn)."""
    return [
        {
            "prompt_id": f"sum-{i}",
            "cohort": "arithmetic",
            "prompt": f"What is {i} + {i % 7}? Answer with the number.",
            "check": json.dumps({"kind": "number", "answer": i + i % 7}),
            "chosen": f"{i + i % 7}",
            "rejected": "I'm sorry, I cannot help with that request.",
            "judge": "verifier",
            "abstained": False,
        }
        for i in range(start, start + n)
    ]


def test_held_out_prompts_are_fixed_by_their_id():
    ids = [f"p{i}" for i in range(1000)]
    share = sum(held_out(i, 0.2) for i in ids) / len(ids)
    assert 0.15 < share < 0.25 and [held_out(i, 0.2) for i in ids] == [held_out(i, 0.2) for i in ids]


def test_pairs_of_several_rounds_keep_their_round(tmp_path):
    save_rows(number_pairs(3) + [number_pairs(1, 9)[0] | {"abstained": True}], tmp_path / "r1")
    save_rows(number_pairs(2, 3), tmp_path / "r2")
    rows = judged_pairs([(1, str(tmp_path / "r1")), (2, str(tmp_path / "r2"))])
    assert [r["round"] for r in rows] == [1, 1, 1, 2, 2] and {r["judge"] for r in rows} == {"verifier"}


def train_and_register(base: str, prompts: list[dict], pairs: list[dict], tmp_path: Path, **config):
    """The reward stage for real on two rounds of `pairs` (split in half), then its version registered in a real
    sqlite MLflow store: (Rewarded, the version's tags)."""
    from mlflow import MlflowClient

    from components.config.experiment import DataConfig, EvaluationConfig
    from components.requests import RewardRequest
    from components.reward_stage import reward_model
    from registry import versions

    half = len(pairs) // 2
    for k, rows in ((1, pairs[:half]), (2, pairs[half:])):
        save_rows(rows, tmp_path / f"round-{k}" / "pairs")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    data = DataConfig(train_prompts=str(tmp_path / "prompts.jsonl"))
    rounds = [(k, str(tmp_path / f"round-{k}" / "pairs")) for k in (1, 2)]
    evaluation = EvaluationConfig(ci_resamples=500)
    sections = {
        "models": CPU,
        "data": data,
        "reward_model": RewardModelConfig(base=base, **config),
        "evaluation": evaluation,
    }
    rewarded = reward_model(RewardRequest(**sections, rounds=rounds, out=tmp_path / "rm", seed=0))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("rm-test"))
    tags = {"base": rewarded.base, "rounds": rewarded.rounds, "labelled_by": rewarded.judges}
    version = versions.register_reward_model(uri, "ratchet-rm-test-reward", run.info.run_id, Path(rewarded.path), tags)
    assert (
        versions.register_reward_model(uri, "ratchet-rm-test-reward", run.info.run_id, Path(rewarded.path), tags)
        == version
    )
    return rewarded, client.get_model_version("ratchet-rm-test-reward", version).tags


def test_reward_model_ranks_unseen_pairs_above_chance_and_is_registered(tiny_model_dir, tmp_path):
    pairs = number_pairs(60)
    prompts = [{"id": p["prompt_id"], "prompt": p["prompt"], "cohort": p["cohort"], "check": p["check"]} for p in pairs]
    rewarded, tags = train_and_register(
        tiny_model_dir,
        prompts,
        pairs,
        tmp_path,
        heldout_fraction=0.25,
        learning_rate=3e-3,
        num_train_epochs=3,
        per_device_train_batch_size=8,
        lora_r=8,
    )
    found = rewarded.metrics
    assert found["rm_train_steps"] >= 10 and found["rm_heldout_pairs"] >= 8 and found["rm_rounds"] == 2
    assert found["rm_heldout_accuracy_ci_low"] > 0.5, found
    assert found["rm_verifier_agreement"] == found["rm_heldout_accuracy"]  # every held-out pair has a check
    assert found["rm_length_correlation"] < 0  # the refusal is the longer answer here
    assert json.loads(tags["rounds"]) == [1, 2] and json.loads(tags["labelled_by"]) == ["verifier"]
    assert tags["base"] == tiny_model_dir
    model = RewardModel.from_stage(rewarded.path, CPU, batch_size=3)
    assert model.batch_size == 3  # the config's reward_model.batch_size, which the evaluation passes
    heldout = [p for p in pairs if held_out(p["prompt_id"], 0.25)]
    chosen = model.score([p["prompt"] for p in heldout], [p["chosen"] for p in heldout])
    rejected = model.score([p["prompt"] for p in heldout], [p["rejected"] for p in heldout])
    right = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(heldout)
    assert right == found["rm_heldout_accuracy"]  # the saved model is the one the stage measured


@pytest.mark.slow
@pytest.mark.e2e
def test_reward_model_on_the_embedded_policy_learns_the_calibration_pairs(tmp_path):
    """SmolLM2-135M with a LoRA head, trained on 3/4 of the judge calibration set's gold pairs (by prompt), must rank
    the other quarter, which it never saw, above chance."""
    from components.judge_check import OPTIONAL_PAIR_FIELDS, PAIR_FIELDS, load_calibration

    rows = load_calibration()
    prompts = [{k: r[k] for k in ("id", "prompt", "cohort", "check", "context")} for r in rows]
    pairs = [
        {
            "prompt_id": r["id"],
            "cohort": r["cohort"],
            "prompt": user_message(r),
            "chosen": r["better"],
            "rejected": r["worse"],
            "judge": "gold",
            "abstained": False,
        }
        for r in rows
    ]
    # Its gold pairs are the held-out quarter in a user's file (`reward_model.gold_pairs`): the calibration set it
    # would use by default is what it trains on here, and scoring all 160 pairs took a third of the test. They are
    # the held-out pairs themselves, so the reward model scores each once (its scores are keyed by text).
    fields = PAIR_FIELDS + OPTIONAL_PAIR_FIELDS
    gold = [{k: r[k] for k in fields if r.get(k)} for r in rows if held_out(r["id"], 0.25)]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold))
    rewarded, tags = train_and_register(
        "smollm2-135m-instruct",
        prompts,
        pairs,
        tmp_path,
        heldout_fraction=0.25,
        learning_rate=1e-3,
        max_steps=8,
        per_device_train_batch_size=8,
        gradient_checkpointing=False,  # 5.0 GB at its peak where 3.1, and 30% less time (89.9 s -> 61.8 s alone)
        gold_pairs=str(tmp_path / "gold.jsonl"),
    )
    found = rewarded.metrics
    assert found["rm_heldout_pairs"] >= 30 and found["rm_heldout_accuracy_ci_low"] > 0.5, found
    assert found["rm_gold_accuracy"] == found["rm_heldout_accuracy"]  # the same pairs, read from the gold file
    assert json.loads(tags["rounds"]) == [1, 2] and tags["base"] == "smollm2-135m-instruct"


def test_an_answer_given_twice_is_scored_once_and_alike(tiny_model_dir):
    import torch

    from components.models import load_tokenizer
    from components.training.reward_model import load_head

    torch.manual_seed(0)
    model = RewardModel(load_head(tiny_model_dir, CPU), load_tokenizer(tiny_model_dir), batch_size=16)
    model.model.config.pad_token_id = model.tokenizer.pad_token_id
    rows_seen = []
    model.model.register_forward_hook(
        lambda module, args, kwargs, output: rows_seen.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    scores = model.score(["q", "r", "q", "q"], ["a", "b", "a", "c"])
    assert rows_seen == [3] and scores[0] == scores[2]
    assert model.score(["q", "q"], ["a", "c"]) == pytest.approx([scores[0], scores[3]], abs=1e-5)


def test_an_empty_pair_set_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="no judged pairs"):
        train_reward_model(RewardModelConfig(base=tiny_model_dir), CPU, [], tmp_path / "rm", tmp_path / "c", 0)


def test_grpo_trains_against_the_reward_model_and_the_verifier(tiny_model_dir, tmp_path):
    """The train stage with `training.reward: reward_model`: TRL's GRPO scores its fresh samples with the reward
    model the reward stage saved and the verifier's graded score, and logs both."""
    from components import stages
    from components.config.experiment import DataConfig, OnlineTrainingConfig
    from components.config.judges import VerifierJudgeConfig
    from components.models import Policy
    from components.requests import TrainRequest

    pairs = number_pairs(12)
    prompts = [{"id": p["prompt_id"], "prompt": p["prompt"], "cohort": p["cohort"], "check": p["check"]} for p in pairs]
    rewarded, _ = train_and_register(tiny_model_dir, prompts, pairs, tmp_path, max_steps=2, lora_r=4)
    training = OnlineTrainingConfig(
        kind="grpo",
        reward="reward_model",
        verifier_weight=0.5,
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
    )
    data = DataConfig(train_prompts=str(tmp_path / "prompts.jsonl"))
    request = TrainRequest(
        models=CPU,
        data=data,
        training=training,
        judge=VerifierJudgeConfig(),
        champion=Policy(tiny_model_dir),
        generations="",
        pairs=str(tmp_path / "round-1" / "pairs"),
        decided_pairs=6,
        out=tmp_path / "adapter",
        seed=0,
        reward_model=rewarded.path,
        reward_model_config=RewardModelConfig(),
    )
    trained = stages.train(request)
    assert trained.path and (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert trained.metrics["steps"] == 1 and "reward_mean" in trained.metrics
    untrained = stages.train(request.model_copy(update={"out": tmp_path / "none", "reward_model": None}))
    assert untrained.path is None  # no reward model (no pair to train one on yet): nothing to learn


def test_a_round_with_no_pair_to_learn_from_trains_no_reward_model(tmp_path):
    from components.config.experiment import DataConfig, EvaluationConfig
    from components.requests import RewardRequest
    from components.reward_stage import reward_model

    save_rows([p | {"abstained": True} for p in number_pairs(4)], tmp_path / "round-1" / "pairs")
    rounds = [(1, str(tmp_path / "round-1" / "pairs"))]
    sections = {
        "models": CPU,
        "data": DataConfig(),
        "reward_model": RewardModelConfig(),
        "evaluation": EvaluationConfig(),
    }
    found = reward_model(RewardRequest(**sections, rounds=rounds, out=tmp_path / "rm", seed=0))
    assert found.path is None and found.metrics["rm_train_pairs"] == 0 and not (tmp_path / "rm").exists()

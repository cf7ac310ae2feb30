import json

import pytest
from datasets import Dataset

from components.config import TrainingConfig
from components.models import Policy, load_policy, load_tokenizer, response_logprob
from components.trainer import DPOLoRATrainer, to_conversational

PAIRS = [
    {
        "prompt_id": f"p{i}",
        "cohort": "arithmetic",
        "prompt": f"What is {i} + 1?",
        "chosen": f"{i + 1}",
        "rejected": "I cannot help with that.",
        "judge": "verifier",
        "p_chosen": 1.0,
        "order_consistent": True,
        "abstained": False,
        "rationale": "number: A passes",
    }
    for i in range(8)
] + [
    {
        "prompt_id": "skip",
        "cohort": "benign",
        "prompt": "hi",
        "chosen": "a",
        "rejected": "b",
        "judge": "ai",
        "p_chosen": 0.5,
        "order_consistent": False,
        "abstained": True,
        "rationale": "orders disagree",
    }
]


def margin(model, tok) -> float:
    return sum(
        response_logprob(model, tok, p["prompt"], p["chosen"])
        - response_logprob(model, tok, p["prompt"], p["rejected"])
        for p in PAIRS
        if not p["abstained"]
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    cfg = TrainingConfig(epochs=3, batch_size=4, learning_rate=2e-3)
    metrics = DPOLoRATrainer(load_policy(Policy(tiny_model_dir)), load_tokenizer(tiny_model_dir), cfg, seed=0).train(
        Dataset.from_list(PAIRS), out
    )
    return out, metrics


def test_abstained_pairs_are_not_trained_on():
    assert len(to_conversational(Dataset.from_list(PAIRS))) == 8


def test_dpo_raises_the_chosen_minus_rejected_margin(tiny_model_dir, trained):
    adapter, _ = trained
    tok = load_tokenizer(tiny_model_dir)
    before = margin(load_policy(Policy(tiny_model_dir)), tok)
    after = margin(load_policy(Policy(tiny_model_dir, (str(adapter),))), tok)
    assert after > before + 1.0


def test_adapter_dir_contract_and_metrics(trained):
    adapter, metrics = trained
    assert {"adapter_config.json", "adapter_model.safetensors", "train_metrics.json"} <= {
        p.name for p in adapter.iterdir()
    }
    saved = json.loads((adapter / "train_metrics.json").read_text())
    assert saved == metrics
    assert metrics["pairs"] == 8 and metrics["steps"] == 6  # 8 pairs / batch 4 = 2 steps x 3 epochs
    assert metrics["loss_last"] < metrics["loss_first"] == pytest.approx(0.6931, abs=1e-3)  # log 2 at the start
    assert metrics["reward_margin"] > 0 and metrics["peak_rss_gib"] > 0


def test_all_abstained_is_an_error(tiny_model_dir, tmp_path):
    trainer = DPOLoRATrainer(load_policy(Policy(tiny_model_dir)), load_tokenizer(tiny_model_dir), TrainingConfig(), 0)
    with pytest.raises(ValueError, match="no non-abstained pairs"):
        trainer.train(Dataset.from_list(PAIRS[-1:]), tmp_path)

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset

from components.build import make_trainer
from components.config.experiment import DPOTrainingConfig, ModelsConfig, OnlineTrainingConfig
from components.judging.judge import VerifierJudge
from components.models import Policy, load_policy, load_tokenizer, response_logprob
from components.training.pair_selection import clearest, to_conversational
from components.training.rewards import JudgeReward, OnlineReward
from components.training.trainer import DPOLoRATrainer, load_for_training, resumable
from components.training.trl_cpu import score_only_labelled_positions

CPU = ModelsConfig(device="cpu")

ROOT = Path(__file__).resolve().parent.parent

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


def margin(model, tok, pairs=PAIRS) -> float:
    """Sum over trained pairs of log p(chosen) - log p(rejected) under the policy."""
    return sum(
        response_logprob(model, tok, p["prompt"], p["chosen"])
        - response_logprob(model, tok, p["prompt"], p["rejected"])
        for p in pairs
        if not p["abstained"]
    )


def train_dpo(model_dir, out, **overrides):
    cfg = DPOTrainingConfig(
        **({"num_train_epochs": 3, "per_device_train_batch_size": 4, "learning_rate": 2e-3} | overrides)
    )
    model = load_for_training(Policy(model_dir), cfg, CPU)
    trainer = DPOLoRATrainer(model, load_tokenizer(model_dir), cfg, CPU, 0, out.parent / f"{out.name}-checkpoints")
    return trainer.train(Dataset.from_list(PAIRS), out)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    return out, train_dpo(tiny_model_dir, out)


def test_scoring_only_the_labelled_positions_on_cpu_gives_trls_log_probs_and_gradients(tiny_model_dir, monkeypatch):
    """TRL's fused LM head scores every position on a CPU; Ratchet has it score the labelled ones only (a quarter
    of a SmolLM2 DPO step): the same log-probs, entropies and LM-head gradient."""
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[1, 10:] = -100  # padding

    def score():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.log_probs.detach(), out.entropy.detach(), model.lm_head.weight.grad.clone()

    trls_choice = getattr(trl_utils._use_triton, "trl_choice", trl_utils._use_triton)
    monkeypatch.setattr(trl_utils, "_use_triton", trls_choice)
    assert not trl_utils._use_triton(torch.device("cpu"))  # TRL's own: every position
    every = score()
    score_only_labelled_positions()
    assert trl_utils._use_triton(torch.device("cpu"))
    for ours, theirs in zip(score(), every, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_whose_state_is_missing_or_cut_short_is_not_resumable(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
    assert not resumable(checkpoint)
    (checkpoint / "trainer_state.json").write_text("")  # a stop while the Trainer wrote it
    assert not resumable(checkpoint)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4, "log_hist')
    assert not resumable(checkpoint)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    assert resumable(checkpoint)


def test_abstained_pairs_are_not_trained_on():
    assert len(to_conversational(Dataset.from_list(PAIRS), None, False)) == 8


def test_max_pairs_keeps_the_clearest_pairs_in_their_order():
    rows = [
        {"prompt": "p", "chosen": str(i), "rejected": "x", "abstained": abstained, "margin": margin, "p_chosen": 1.0}
        for i, (margin, abstained) in enumerate([(0.2, False), (1.0, False), (1.0, True), (0.67, False), (1.0, False)])
    ]
    kept = clearest(Dataset.from_list(rows), 2, False)
    assert kept["chosen"] == ["1", "4"]  # the abstained pair never, however wide its margin
    assert clearest(Dataset.from_list(rows), 3, False)["chosen"] == ["1", "3", "4"]
    assert len(clearest(Dataset.from_list(rows), None, False)) == 4
    assert len(to_conversational(Dataset.from_list(rows), 1, False)) == 1


def test_length_balance_keeps_as_many_longer_chosen_answers_as_shorter_and_the_widest_margins():
    """Three pairs choose the shorter answer, one the longer, one ties on length: the two narrower shorter-chosen
    pairs go; the abstained pair is never trained on, and the tie stays."""
    shape = [  # (chosen, rejected, margin, abstained)
        ("a b", "a b c d", 0.9, False),
        ("a", "a b c", 0.3, False),
        ("a b c d", "a", 0.2, False),
        ("a b", "c d", 0.1, False),
        ("a", "a b c d e", 0.5, False),
        ("a", "a b", 1.0, True),
    ]
    rows = [
        {"prompt": "p", "chosen": c, "rejected": r, "margin": m, "abstained": a, "p_chosen": 1.0}
        for c, r, m, a in shape
    ]
    kept = clearest(Dataset.from_list(rows), None, True)
    assert kept["margin"] == [0.9, 0.2, 0.1]
    assert len(clearest(Dataset.from_list(rows), None, False)) == 5  # off: every decided pair
    assert clearest(Dataset.from_list(rows), 2, True)["margin"] == [0.9, 0.2]  # then max_pairs


def test_dpo_raises_the_chosen_minus_rejected_margin(tiny_model_dir, trained):
    adapter, _ = trained
    tok = load_tokenizer(tiny_model_dir)
    before = margin(load_policy(Policy(tiny_model_dir), CPU), tok)
    after = margin(load_policy(Policy(tiny_model_dir, (str(adapter),)), CPU), tok)
    assert after > before + 1.0


def test_adapter_dir_contract_and_metrics(trained):
    adapter, metrics = trained
    assert {p.name for p in adapter.iterdir()} == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert not adapter.with_name(f"{adapter.name}-checkpoints").exists()  # deleted once the adapter is saved
    assert metrics["examples"] == 8 and metrics["steps"] == 6  # 8 pairs / batch 4 = 2 steps x 3 epochs
    assert metrics["loss_last"] < metrics["loss_first"] == pytest.approx(0.6931, abs=1e-3)  # log 2 at the start
    assert metrics["reward_margin"] > 0 and metrics["peak_rss_gib"] > 0 and metrics["tokens_per_second"] > 0
    assert metrics["resumed"] is False
    loss, margins = metrics["curves"]["loss"], metrics["curves"]["reward_margin"]  # step by step, for MLflow
    assert [step for step, _ in loss] == [step for step, _ in margins] == [1, 2, 3, 4, 5, 6]
    assert loss[0][1] == metrics["loss_first"] and loss[-1][1] == metrics["loss_last"]


def test_time_budget_ends_training_before_a_step_that_would_overrun_it(tiny_model_dir, tmp_path):
    metrics = train_dpo(tiny_model_dir, tmp_path / "adapter", max_seconds=1e-3)
    assert metrics["steps"] == 1  # of the 6 the epochs ask for
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_all_abstained_is_an_error(tiny_model_dir, tmp_path):
    model, tok = load_policy(Policy(tiny_model_dir), CPU), load_tokenizer(tiny_model_dir)
    trainer = DPOLoRATrainer(model, tok, DPOTrainingConfig(), CPU, 0, tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="no non-abstained pairs"):
        trainer.train(Dataset.from_list(PAIRS[-1:]), tmp_path)


def test_qlora_loads_4bit_layers_and_trains_in_the_preferred_direction(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    cfg = DPOTrainingConfig(load_in_4bit=True)
    model = load_for_training(Policy(tiny_model_dir), cfg, CPU)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    metrics = train_dpo(tiny_model_dir, tmp_path / "adapter", load_in_4bit=True)
    tok = load_tokenizer(tiny_model_dir)
    # The adapter learned on the 4-bit base is applied to the full-precision base, as later rounds do.
    before = margin(load_policy(Policy(tiny_model_dir), CPU), tok)
    after = margin(load_policy(Policy(tiny_model_dir, (str(tmp_path / "adapter"),)), CPU), tok)
    assert after > before + 1.0 and metrics["loss_last"] < metrics["loss_first"]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_trainer_uses_the_judge_as_reward(tiny_model_dir, tmp_path, method):
    """Prompts with a word-count check: the verifier reward is 1 for short samples, 0 for long ones (the random
    model's 8-token samples have 3-7 words, so groups have reward variance to learn from)."""
    check = json.dumps(
        {
            "kind": "ifeval",
            "instruction_id": "length_constraints:number_words",
            "kwargs": {"num_words": 5, "relation": "less than"},
        }
    )
    prompts = [
        {"id": f"q{i}", "prompt": f"Topic {i} in under 7 words.", "cohort": "ifeval", "check": check, "context": ""}
        for i in range(4)
    ]
    calls = []
    reward = JudgeReward(VerifierJudge(), prompts, anchors={})
    counted = lambda *a, **kw: calls.append(1) or reward(*a, **kw)  # noqa: E731
    cfg = OnlineTrainingConfig(
        kind=method,
        num_generations=4,
        per_device_train_batch_size=8,
        max_steps=2,
        max_completion_length=8,
        learning_rate=1e-3,
        beta=0.05,
    )
    tok = load_tokenizer(tiny_model_dir)
    base = load_policy(Policy(tiny_model_dir), CPU)
    model = load_for_training(Policy(tiny_model_dir), cfg, CPU)
    trainer = make_trainer(cfg, model, tok, CPU, 0, tmp_path / "checkpoints", OnlineReward([counted]))
    metrics = trainer.train(Dataset.from_list(prompts), tmp_path / "adapter")
    assert calls and metrics["steps"] == 2 and 0.0 <= metrics["reward_mean"] <= 1.0
    tuned = load_policy(Policy(tiny_model_dir, (str(tmp_path / "adapter"),)), CPU)
    ids = tok("Topic 1", return_tensors="pt").input_ids
    assert not (base(ids).logits - tuned(ids).logits).abs().max().item() < 1e-6


def test_judge_reward_routes_checks_and_ai_verdicts(tiny_model_dir):
    from components.build_judges import logprob_judge
    from components.judging.judge import load_rubric
    from components.judging.scorers import TransformersScorer

    tok = load_tokenizer(tiny_model_dir)
    scorer = TransformersScorer(load_policy(Policy(tiny_model_dir), CPU), tok, 8, "tiny")
    ai = logprob_judge("ai:tiny", scorer, tok, load_rubric("constitution"), "completion", "prefilled", 0.0)
    prompts = [
        {"id": "n", "prompt": "2+2?", "check": json.dumps({"kind": "number", "answer": 4})},
        {"id": "o", "prompt": "Be kind.", "check": ""},
    ]
    reward = JudgeReward(ai, prompts, anchors={"o": "Hello."})
    got = reward(None, [[{"role": "assistant", "content": "4"}], "5", "Nice!"], prompt_id=["n", "n", "o"])
    assert got[:2] == [1.0, 0.0] and 0.0 <= got[2] <= 1.0


RESUMABLE = """
import json
import sys
from pathlib import Path
from datasets import Dataset
from components.config.experiment import DPOTrainingConfig, ModelsConfig
from components.models import Policy, load_tokenizer
from components.training.trainer import DPOLoRATrainer, load_for_training
sys.path.insert(0, {tests!r})
from test_trainer import PAIRS
cfg = DPOTrainingConfig(max_steps=int(sys.argv[3]), per_device_train_batch_size=2, save_steps=1, learning_rate=1e-3)
models = ModelsConfig(device="cpu")
trainer = DPOLoRATrainer(load_for_training(Policy(sys.argv[1]), cfg, models), load_tokenizer(sys.argv[1]), cfg,
                         models, 0, Path(sys.argv[2]) / "ckpt")
print(json.dumps(trainer.train(Dataset.from_list(PAIRS), Path(sys.argv[2]) / "adapter")))
"""


def test_killed_training_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUMABLE.format(tests=str(ROOT / "tests")))
    (tmp_path / "adapter").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), tiny_model_dir, str(tmp_path), "400"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def complete_checkpoints():
        found = [p for p in (tmp_path / "ckpt").glob("checkpoint-*") if resumable(p)]
        return sorted(int(p.name.split("-")[1]) for p in found)

    deadline = time.time() + 120
    while not complete_checkpoints() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # kill mid-training, possibly while a later checkpoint is being written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = complete_checkpoints()
    assert saved, "no checkpoint was written before the kill"
    # Make sure the resume also meets, newer than the last whole checkpoint, one half-written (no state yet) and
    # one half-deleted (its state left, its weights gone), as a kill during the Trainer's rotation leaves it.
    newest = max(int(p.name.split("-")[1]) for p in (tmp_path / "ckpt").glob("checkpoint-*"))
    half_written, half_deleted = (tmp_path / "ckpt" / f"checkpoint-{newest + n}" for n in (1, 2))
    for partial in (half_written, half_deleted):
        shutil.copytree(tmp_path / "ckpt" / f"checkpoint-{saved[-1]}", partial)
    (half_written / "trainer_state.json").unlink()
    for weights in half_deleted.glob("*.safetensors"):
        weights.unlink()
    done = subprocess.run(
        [sys.executable, str(script), tiny_model_dir, str(tmp_path), str(newest + 2)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["resumed"] is True
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("load_in_4bit", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_dpo_on_embedded_smollm2_raises_the_margin(tmp_path, load_in_4bit):
    """LoRA and QLoRA (bitsandbytes NF4 on CPU) on the embedded model. One real step: a 4-bit step takes ~31 s on
    CPU, and one already raises the margin (70.2 -> 73.2 here; three steps, 100 s, gave 77.9)."""
    pairs = [p for p in PAIRS if not p["abstained"]][:4]
    cfg = DPOTrainingConfig(max_steps=1, per_device_train_batch_size=2, learning_rate=1e-4, load_in_4bit=load_in_4bit)
    tok = load_tokenizer("smollm2-135m-instruct")
    before = margin(load_policy(Policy("smollm2-135m-instruct"), CPU), tok, pairs)
    model = load_for_training(Policy("smollm2-135m-instruct"), cfg, CPU)
    DPOLoRATrainer(model, tok, cfg, CPU, 0, tmp_path / "checkpoints").train(Dataset.from_list(pairs), tmp_path / "a")
    after = margin(load_policy(Policy("smollm2-135m-instruct", (str(tmp_path / "a"),)), CPU), tok, pairs)
    assert after > before


def test_a_round_reports_the_pairs_dpo_trained_on_after_selection_not_every_decided_pair():
    from components.stages import Judged, Trained, round_metrics

    judged = Judged("pairs", pairs=64, abstained=3, examples=[])
    assert round_metrics(judged, Trained("adapter", {"examples": 50}, pairs=50), None)["train/pairs_trained"] == 50
    online = Trained("adapter", {"examples": 12})  # GRPO trains on fresh samples of 12 prompts, not on the pairs
    assert round_metrics(judged, online, None)["train/pairs_trained"] == 61

"""The evaluate stage on its own, for a champion that is no longer the base (rounds after a promotion)."""

import json

import pytest

from components import stages
from components.config import load_config
from components.data import DataError
from components.models import Policy


def test_a_promoted_champion_is_also_compared_with_the_round_0_base(
    tiny_model_dir, write_tiny_config, random_adapter, tmp_path
):
    cfg = load_config(write_tiny_config(tmp_path))
    champion = Policy(tiny_model_dir, (random_adapter(tiny_model_dir, 1, tmp_path / "a1"),))
    challenger = champion.with_adapter(random_adapter(tiny_model_dir, 2, tmp_path / "a2"))
    summary = json.loads((stages.evaluate(cfg, champion, challenger, tmp_path / "eval") / "summary.json").read_text())
    vs = summary["vs_champion"]
    assert 0 <= vs["win_rate_vs_base"] <= 1 and vs["win_rate_vs_base_ci_low"] <= vs["win_rate_vs_base"]
    low, high = vs["task_completion_delta_vs_base_ci_low"], vs["task_completion_delta_vs_base_ci_high"]
    assert low <= vs["task_completion_delta_vs_base"] <= high and "task_completion_delta_vs_base.ifeval" in vs
    assert vs["benign_refusal_ratio_vs_base"] > 0
    assert {"should_refuse_ratio", "self_cross_agreement", "judge_length_slope", "kl_per_token"} <= set(vs)


def test_a_prompt_without_room_for_its_response_is_refused_by_id(tiny_model_dir, smol_tokenizer):
    """The tiny model has a 1,024-token context: 1,000 words do not fit with 64 new tokens; 900 tokens' worth do
    fit with 8 (chat template included)."""
    long_row = {"id": "long", "prompt": "word " * 1000, "cohort": "benign", "context": ""}
    with pytest.raises(DataError, match=r"p.jsonl: prompt id 'long' is \d+ tokens; with max_new_tokens 64"):
        stages.check_context([long_row], tiny_model_dir, smol_tokenizer, 64, "p.jsonl")
    stages.check_context([{**long_row, "prompt": "word " * 900}], tiny_model_dir, smol_tokenizer, 8, "p.jsonl")

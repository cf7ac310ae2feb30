"""The evaluate stage on its own: one load of the policy per stage, answers kept in the run store's memo, the
comparison with the round-0 base for a champion that is no longer the base."""

import pytest
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.config.loading import load_config
from components.data import load_rows
from components.evaluate_stage import evaluate
from components.models import Policy
from components.requests import evaluate_request


@pytest.fixture
def count_loads(monkeypatch):
    """Every model and tokenizer load, by the directory it reads (a spy on the real loaders; the loads happen)."""
    loads: dict[str, list[str]] = {"model": [], "tokenizer": []}
    for kind, cls in (("model", PreTrainedModel), ("tokenizer", PreTrainedTokenizerBase)):
        original = cls.from_pretrained.__func__

        def counted(klass, path, *args, _original=original, _kind=kind, **kwargs):
            loads[_kind].append(str(path).rstrip("/"))
            return _original(klass, path, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(counted))
    return loads


def test_one_policy_load_serves_the_stage_and_answers_are_kept_in_the_memo(
    tiny_model_dir, write_tiny_config, random_adapter, tmp_path, count_loads
):
    """Round 1 (champion = base) and then a round after a promotion (champion = base + a1, challenger + a2).
    The tiny config's evaluation judge is the same tiny checkpoint, so each stage loads it (and its tokenizer)
    twice: once as the policy pair, once as the judge. Before this stage held its models together it loaded the
    champion, the challenger, the champion again as self-judge and, after a promotion, the base for its answers."""
    cfg = load_config(write_tiny_config(tmp_path))
    memo = tmp_path / "memo"
    a1 = random_adapter(tiny_model_dir, 1, tmp_path / "a1")
    base, champion = Policy(tiny_model_dir), Policy(tiny_model_dir, (a1,))
    challenger = champion.with_adapter(random_adapter(tiny_model_dir, 2, tmp_path / "a2"))
    for calls in count_loads.values():
        calls.clear()  # making the random adapters loaded the base too

    first = evaluate(evaluate_request(cfg, base, champion, tmp_path / "eval-1", memo))
    assert count_loads == {"model": [tiny_model_dir] * 2, "tokenizer": [tiny_model_dir] * 2}  # policy, judge
    assert len(list((memo / "answers").iterdir())) == 2  # the base's and round 1's challenger's greedy answers
    for calls in count_loads.values():
        calls.clear()
    second = evaluate(evaluate_request(cfg, champion, challenger, tmp_path / "eval-2", memo))
    assert count_loads == {"model": [tiny_model_dir] * 2, "tokenizer": [tiny_model_dir] * 2}
    assert len(list((memo / "answers").iterdir())) == 3  # only the new challenger's answers were generated

    rows = {r["model"]: r["response"] for r in load_rows(tmp_path / "eval-2") if r["prompt_id"] == "heldout0"}
    promoted = {r["model"]: r["response"] for r in load_rows(tmp_path / "eval-1") if r["prompt_id"] == "heldout0"}
    assert rows["champion"] == promoted["challenger"]  # the champion's answers are the ones it gave as challenger
    vs = second.metrics
    assert (
        0 <= vs["judge/win_rate_vs_base"] <= 1 and vs["judge/win_rate_vs_base_ci_low"] <= vs["judge/win_rate_vs_base"]
    )
    low, high = vs["task/task_completion_delta_vs_base_ci_low"], vs["task/task_completion_delta_vs_base_ci_high"]
    assert low <= vs["task/task_completion_delta_vs_base"] <= high and "task/task_completion_delta_vs_base.ifeval" in vs
    assert vs["refusal/benign_refusal_ratio_vs_base"] > 0
    assert {
        "refusal/should_refuse_ratio",
        "judge/self_cross_agreement",
        "judge/judge_length_slope",
        "drift/kl_per_token",
    } <= set(vs)
    assert (
        first.metrics["judge/win_rate_vs_base"] == first.metrics["judge/win_rate"]
    )  # round 1: the champion is the base
    assert first.metrics["task/task_completion_delta_vs_base"] == first.metrics["task/task_completion_delta"]


def test_two_unrelated_policies_are_loaded_one_each(tiny_model_dir, write_tiny_config, random_adapter, tmp_path):
    """`ratchet evaluate --challenger 1 --champion 3`: the challenger is not the champion plus one adapter."""
    cfg = load_config(write_tiny_config(tmp_path))
    one = Policy(tiny_model_dir, (random_adapter(tiny_model_dir, 1, tmp_path / "a1"),))
    other = Policy(tiny_model_dir, (random_adapter(tiny_model_dir, 2, tmp_path / "a2"),))
    result = evaluate(
        evaluate_request(cfg, champion=other, challenger=one, out=tmp_path / "eval", memo=tmp_path / "memo")
    )
    assert result.metrics["drift/kl_per_token"] == result.metrics["drift/kl_per_token"]  # measured (not NaN)
    assert {r["model"] for r in load_rows(result.path)} == {"champion", "challenger"}

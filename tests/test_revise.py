"""Critique and revise on a random-init tiny model as the reviser: every revision becomes a pair (revision chosen,
original rejected, the critique as rationale), and one that fails the check or that the judge does not prefer is an
abstention, counted by reason."""

import json

from components.build_judges import make_reviser
from components.config.experiment import ModelsConfig, PairsConfig
from components.judging.biased import BiasedJudge
from components.judging.judge import load_rubric
from components.judging.revise import CRITIQUE, DROPPED, dropped, revise_pairs

CPU = ModelsConfig(device="cpu")


class Replies:
    """A reviser that says what it is told (the critique first, then the revision), recording what it was asked:
    the pairing logic is tested on answers whose verdicts are known."""

    name = "scripted"

    def __init__(self, critiques: list[str], revisions: list[str]):
        self.answers, self.asked = [critiques, revisions], []

    def reply(self, messages: list[str], max_new_tokens: int) -> list[str]:
        self.asked.append(messages)
        return self.answers[len(self.asked) - 1]


FOUR = json.dumps({"kind": "number", "answer": 4})
PROMPTS = [
    {"id": "n", "cohort": "arithmetic", "prompt": "What is 2 + 2?", "context": "", "check": FOUR},
    {"id": "o", "cohort": "benign", "prompt": "Say hello.", "context": "", "check": ""},
    {"id": "s", "cohort": "benign", "prompt": "Greet me.", "context": "", "check": ""},
]
SAMPLES = [
    {"prompt_id": "n", "sample": 0, "response": "5"},
    {"prompt_id": "o", "sample": 0, "response": "Hi"},
    {"prompt_id": "s", "sample": 0, "response": "Hello there, friend"},
]


def test_a_revision_is_kept_only_when_it_passes_the_check_and_the_judge_prefers_it():
    reviser = Replies(["Wrong sum.", "Too curt.", "Fine."], ["It is 5, surely.", "Hello, nice to meet you!", "Hi"])
    rows = revise_pairs(reviser, BiasedJudge("length"), "Be right.", PROMPTS, SAMPLES, 1, 32, check_revisions=True)
    assert "Be right." in reviser.asked[0][0] and "Wrong sum." in reviser.asked[1][0]  # the critique feeds the rewrite
    by_id = {r["prompt_id"]: r for r in rows}
    assert by_id["n"]["abstained"] and by_id["n"]["rationale"].startswith(DROPPED["failed_check"])
    kept = by_id["o"]
    assert not kept["abstained"] and (kept["chosen"], kept["rejected"]) == ("Hello, nice to meet you!", "Hi")
    assert kept["rationale"] == "critique: Too curt." and kept["judge"] == "revise:scripted+biased:length"
    assert by_id["s"]["abstained"] and by_id["s"]["rationale"].startswith(DROPPED["not_preferred"])
    assert dropped(rows) == {"failed_check": 1, "not_preferred": 1}


def test_with_the_checks_unread_only_the_training_judge_filters_revisions():
    reviser = Replies(["Wrong sum.", "Too curt.", "Fine."], ["It is 5, surely.", "Hello, nice to meet you!", "Hi"])
    rows = revise_pairs(reviser, BiasedJudge("length"), "Be right.", PROMPTS, SAMPLES, 1, 32, check_revisions=False)
    by_id = {r["prompt_id"]: r for r in rows}
    assert not by_id["n"]["abstained"] and by_id["n"]["chosen"] == "It is 5, surely."  # fails the check, kept
    assert dropped(rows) == {"failed_check": 0, "not_preferred": 1}


def test_the_champion_critiques_and_revises_for_real(tiny_model_dir):
    reviser = make_reviser(PairsConfig(kind="revise", reviser=tiny_model_dir, max_new_tokens=6), None, CPU)
    constitution = load_rubric("constitution")
    rows = revise_pairs(reviser, BiasedJudge("length"), constitution, PROMPTS, SAMPLES, 1, 6, check_revisions=True)
    assert [r["rejected"] for r in rows] == ["5", "Hi", "Hello there, friend"]
    assert all(r["chosen"] and r["rationale"] for r in rows)  # the tiny model's words, whatever they are
    assert sum(dropped(rows).values()) == sum(r["abstained"] for r in rows)
    assert CRITIQUE.splitlines()[0] == "Principles:"


def test_the_judge_stage_builds_revision_pairs(tiny_model_dir, tmp_path):
    from components import stages
    from components.config.experiment import DataConfig
    from components.config.judges import BiasedJudgeConfig
    from components.data import save_rows
    from components.models import Policy
    from components.requests import JudgeRequest

    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    save_rows(SAMPLES, tmp_path / "generations")
    pairs = PairsConfig(kind="revise", reviser="self", max_new_tokens=6)
    data = DataConfig(train_prompts=str(tmp_path / "prompts.jsonl"))
    judge = BiasedJudgeConfig(bias="length")
    generations, policy = str(tmp_path / "generations"), Policy(tiny_model_dir)
    request = JudgeRequest(
        models=CPU,
        data=data,
        judge=judge,
        pairs=pairs,
        champion=policy,
        generations=generations,
        out=tmp_path / "pairs",
    )
    judged = stages.judge(request)
    assert judged.pairs == 3 and sum(judged.dropped.values()) == judged.abstained
    assert set(judged.dropped) == {"failed_check", "not_preferred"}

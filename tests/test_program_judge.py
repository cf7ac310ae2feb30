"""The program verdict: checks the judge model writes, run in the sandbox, and the fallback where none separates."""

from pathlib import Path

import pytest

from components.build_judges import make_judge
from components.config.experiment import ModelsConfig
from components.config.judges import AIJudgeConfig
from components.judging.judge import LengthControlledJudge, PointwiseLogprobJudge, load_rubric
from components.judging.pairs import build_pairs
from components.judging.program_judge import (
    CODE_END,
    CODE_START,
    FORMAT_ONLY,
    MAX_CODE_TOKENS,
    PROGRAM_INSTRUCTIONS,
    TASK_INSTRUCTIONS,
    WITH_THE_TASK,
    ProgramJudge,
    instructions,
    run_check,
)
from components.judging.scorers import TransformersScorer
from components.models import Policy, chat_turn, load_policy, load_tokenizer

LOWERCASE_NO_COMMA = {
    "id": "c",
    "prompt": "Describe rain. Use only lowercase letters. Do not use any commas.",
    "cohort": "ifeval",
    "context": "",
    "check": "",
}
CHECKS = {  # what a judge model that reads the instructions would write
    "Describe rain.": "def check(response: str):\n    return None\n",
    "Use only lowercase letters.": "def check(response: str):\n    return response == response.lower()\n",
    "Do not use any commas.": "import re\n\ndef check(response: str):\n    return re.search(',', response) is None\n",
}


def test_instructions_are_the_requests_sentences():
    assert instructions(LOWERCASE_NO_COMMA) == list(CHECKS)
    abbreviated = {"prompt": "Add a postscript starting with P.S. Include the word 'morning'."}
    assert instructions(abbreviated) == ["Add a postscript starting with P.S.", "Include the word 'morning'."]


def test_the_sandbox_runs_a_check_and_refuses_what_it_must_not_do():
    assert run_check(CHECKS["Use only lowercase letters."], ["all small", "Not All", ""]) == [True, False, True]
    assert run_check("import re\ndef check(r):\n    return re.search('x', r)", ["ax", "b"]) == [True, None]
    for code in (
        "import os\ndef check(r):\n    return True",  # a module outside re, string, math
        "def check(r):\n    return r.__class__ is str",  # a dunder name
        "def check(r):\n    return open('/tmp/ratchet-sandbox-escape', 'w') is not None",  # no open() in builtins
        "def check(r):\n    return 1 / 0",  # raises
        "def check(r):\n    while True:\n        pass",  # never returns: half a second a response
        "this is not python",
    ):
        assert run_check(code, ["a", "b"]) == ["error", "error"], code
    assert not Path("/tmp/ratchet-sandbox-escape").exists()


def tiny_pointwise_judge(model_dir: str) -> PointwiseLogprobJudge:
    tokenizer = load_tokenizer(model_dir)
    scorer = TransformersScorer(load_policy(Policy(model_dir), ModelsConfig()), tokenizer, 8, "tiny")
    return PointwiseLogprobJudge("ai:tiny", scorer, tokenizer, load_rubric("concise-and-correct"), "chat", 0.0)


def scripted_judge(tiny_model_dir, checks: dict[str, str]) -> ProgramJudge:
    """A program judge whose checks are given (so the verdicts can be known), with the tiny model's pointwise
    judge as its fallback."""
    fallback = tiny_pointwise_judge(tiny_model_dir)
    return ProgramJudge("program", checks.__getitem__, fallback)


def test_the_answer_that_meets_more_checked_instructions_wins(tiny_model_dir):
    judge = scripted_judge(tiny_model_dir, CHECKS)
    good, one_miss, two_misses = "soft rain falls", "soft rain, falling", "Soft rain, Falling"
    verdicts = judge.judge([(LOWERCASE_NO_COMMA, good, one_miss), (LOWERCASE_NO_COMMA, two_misses, one_miss)])
    assert [(v.p_a, v.abstained) for v in verdicts] == [(0.75, False), (0.25, False)]
    assert "'Do not use any commas.' A True, B False" in verdicts[0].rationale
    assert {v.decided_by for v in verdicts} == {"program written checks"}
    assert judge.programs == CHECKS  # each instruction's check was written once


def test_what_no_check_separates_goes_to_the_fallback_judge(tiny_model_dir):
    judge = scripted_judge(tiny_model_dir, CHECKS)
    open_request = {**LOWERCASE_NO_COMMA, "prompt": "Describe rain."}
    tied, undecidable = judge.judge([(LOWERCASE_NO_COMMA, "soft rain", "grey rain"), (open_request, "a", "b")])
    assert "checks met: A 1.00, B 1.00 of 2; ai:tiny: P(yes)" in tied.rationale
    assert undecidable.rationale.startswith("no instruction that code can check; ai:tiny: P(yes)")
    assert tied.decided_by == undecidable.decided_by == "ai:tiny"  # the fallback's, for judge-check to count


def test_without_a_fallback_what_no_check_separates_abstains(tiny_model_dir):
    """`fallback: none`: fewer pairs, each decided by a written check (docs/experiments.md: where the gold can tell
    two answers apart, the pointwise fallback sided with it half the time)."""
    judge = ProgramJudge("program", scripted_judge(tiny_model_dir, CHECKS).write, None)
    open_request = {**LOWERCASE_NO_COMMA, "prompt": "Describe rain."}
    decided, tied, undecidable = judge.judge(
        [
            (LOWERCASE_NO_COMMA, "soft rain", "Soft rain"),
            (LOWERCASE_NO_COMMA, "soft rain", "grey rain"),
            (open_request, "a", "b"),
        ]
    )
    assert (decided.p_a, decided.abstained, decided.decided_by) == (0.75, False, "program written checks")
    assert tied.abstained and tied.rationale == "checks met: A 1.00, B 1.00 of 2"
    assert undecidable.abstained and undecidable.rationale == "no instruction that code can check"


def test_only_the_program_verdict_takes_a_fallback_setting(tiny_model_dir):
    config = AIJudgeConfig(model=tiny_model_dir, verdict="program", fallback="none", prompt_style="chat")
    judge = make_judge(config, Policy(tiny_model_dir), ModelsConfig())
    assert isinstance(judge, ProgramJudge) and judge.fallback is None and judge.name.endswith(":program-checks-only")
    with pytest.raises(ValueError, match="fallback: only the program verdict"):
        AIJudgeConfig(model=tiny_model_dir, verdict="pointwise", fallback="none")


def test_a_model_that_writes_no_working_code_leaves_every_item_to_the_fallback(tiny_model_dir):
    """The tiny random model as the judge writes garbage (a check's worth of tokens), which the sandbox refuses."""
    judge = make_judge(
        AIJudgeConfig(model=tiny_model_dir, verdict="program", prompt_style="chat"),
        Policy(tiny_model_dir),
        ModelsConfig(),
    )
    lowercase = {**LOWERCASE_NO_COMMA, "prompt": "Use only lowercase letters."}
    [verdict] = judge.judge([(lowercase, "soft rain", "Soft rain")])
    assert isinstance(judge, ProgramJudge) and len(judge.programs) == 1
    assert verdict.rationale.startswith("no instruction that code can check; ai:")


def test_each_pair_names_the_part_of_the_judge_that_decided_it_through_length_control(tiny_model_dir):
    """What the rounds' pairs record (and benchmarks/instruction_coverage.py counts): the written checks or the
    pointwise fallback, kept through the length control that the flagship's AI judge wears."""
    judge = LengthControlledJudge(scripted_judge(tiny_model_dir, CHECKS), abstain_margin=0.0, scale_words=50)
    open_request = {**LOWERCASE_NO_COMMA, "id": "o", "prompt": "Describe rain."}
    samples = {"c": ["soft rain falls", "Soft rain, Falling"], "o": ["grey rain", "a storm of rain and wind"]}
    generations = [{"prompt_id": p, "sample": i, "response": r} for p, rs in samples.items() for i, r in enumerate(rs)]
    checked, fallback = build_pairs(judge, [LOWERCASE_NO_COMMA, open_request], generations, per_prompt=1)
    assert (checked["chosen"], checked["decided_by"]) == ("soft rain falls", "program written checks")
    assert (fallback["abstained"], fallback["decided_by"]) == (False, "ai:tiny")  # two different texts' P(yes)


@pytest.mark.parametrize("stop", ["```", "\n"])
def test_transformers_completion_is_greedy_and_ends_before_the_stop(tiny_model_dir, stop):
    scorer = tiny_pointwise_judge(tiny_model_dir).scorer
    first, again = (scorer.complete("Write a check.", 24, stop) for _ in range(2))
    assert first == again and stop not in first


HOLLOW = "*highlighted section*\n\n*highlighted section*\n\nP.S. I hope this helps you."
SUNSET = "The sun sinks low and the sky turns orange and red, its light spread over the calm water as evening falls."


def test_checking_the_task_shows_the_judge_a_check_that_a_hollow_answer_fails():
    """The example check the task prompt shows (its open request's): a hollow answer fails it, a real one passes;
    the format-only prompt's example declines both."""
    shown, declined = WITH_THE_TASK["open_request"], FORMAT_ONLY["open_request"]
    assert shown in TASK_INSTRUCTIONS and declined in PROGRAM_INSTRUCTIONS and shown not in PROGRAM_INSTRUCTIONS
    assert run_check(shown, [HOLLOW, SUNSET]) == [False, True]
    assert run_check(declined, [HOLLOW, SUNSET]) == [None, None]


def test_check_the_task_reaches_the_prompt_the_judge_model_writes_from(tiny_model_dir):
    config = AIJudgeConfig(model=tiny_model_dir, verdict="program", check_the_task=True, prompt_style="chat")
    judge = make_judge(config, Policy(tiny_model_dir), ModelsConfig())
    tokenizer = load_tokenizer(tiny_model_dir)
    scorer = TransformersScorer(load_policy(Policy(tiny_model_dir), ModelsConfig()), tokenizer, 8, "tiny")
    asked = chat_turn(tokenizer, TASK_INSTRUCTIONS.format(instruction="Describe rain.")) + CODE_START
    assert judge.write("Describe rain.") == scorer.complete(asked, MAX_CODE_TOKENS, CODE_END)
    with pytest.raises(ValueError, match="check_the_task: only the program verdict"):
        AIJudgeConfig(model=tiny_model_dir, verdict="pointwise", check_the_task=True)

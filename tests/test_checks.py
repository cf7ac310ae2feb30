import pytest

from components.checks import hollow, passes, score, validate_check
from components.judging.refusal_judge import is_refusal


@pytest.mark.parametrize(
    "spec, response, expected",
    [
        ({"kind": "number", "answer": 42}, "6 * 7 = 42", True),
        ({"kind": "number", "answer": 42}, "It is 42, not 41", False),  # the last number counts
        ({"kind": "number", "answer": -3}, "2 - 5 = -3.", True),
        ({"kind": "number", "answer": 1200}, "The total is 1,200", True),
        ({"kind": "number", "answer": 42}, "forty-two", False),
        ({"kind": "contains", "any": ["Paris"]}, "It is paris.", True),
        ({"kind": "contains", "any": ["Paris"]}, "It is Lyon.", False),
        ({"kind": "not_contains", "any": ["BANANA"]}, "The shop opens at 9.", True),
        ({"kind": "not_contains", "any": ["BANANA"]}, "banana", False),
        ({"kind": "ifeval", "instruction_id": "change_case:english_lowercase", "kwargs": {}}, "all lower here", True),
        ({"kind": "ifeval", "instruction_id": "change_case:english_lowercase", "kwargs": {}}, "Not lower", False),
        ({"kind": "ifeval", "instruction_id": "punctuation:no_comma", "kwargs": {}}, "a, b", False),
        (
            {
                "kind": "ifeval",
                "instruction_id": "length_constraints:number_words",
                "kwargs": {"num_words": 5, "relation": "less than"},
            },
            "one two three",
            True,
        ),
        (
            {"kind": "ifeval", "instruction_id": "punctuation:no_comma", "kwargs": {}},
            "   ",
            False,
        ),  # empty never passes
    ],
)
def test_checks(spec, response, expected):
    validate_check(spec)
    assert passes(spec, response) is expected


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "number"},
        {"kind": "ifeval", "instruction_id": "nope"},
        {"kind": "ifeval", "instruction_id": "length_constraints:number_sentences"},
        {"kind": "contains", "any": []},
        {"kind": "regex"},
        ["not", "a", "dict"],
    ],
)
def test_bad_check_specs_are_rejected(spec):
    with pytest.raises(ValueError):
        validate_check(spec)


@pytest.mark.parametrize(
    "text, refused",
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot assist with breaking into accounts.", True),
        ("Sorry, that's not something I can do.", True),
        ("As an AI, I must decline.", True),
        ("I\u2019m not able to help with that request.", True),
        ("Use `kill -9 <pid>`; if you can't find the pid, run `ps aux`.", False),
        ("Sure! Here is how to shoot a portrait in low light.", False),
        ("Unfortunately", True),
        ("", False),
    ],
)
def test_refusal_classifier(text, refused):
    assert is_refusal(text) is refused


def test_the_language_behind_a_case_check_is_decided_the_same_way_every_time():
    """langdetect samples; unseeded, "simple 20 words." came out English or Afrikaans from call to call."""
    spec = {"kind": "ifeval", "instruction_id": "change_case:english_lowercase"}
    assert len({score(spec, "simple 20 words.") for _ in range(40)}) == 1


HIGHLIGHT_AND_PS = [
    {"instruction_id": "detectable_format:number_highlighted_sections", "kwargs": {"num_highlights": 2}},
    {"instruction_id": "detectable_content:postscript", "kwargs": {"postscript_marker": "P.S."}},
]
COOKING = {"topic": ["cooking", "cook"], "related": ["food", "meal", "ingredient", "heat", "pan", "recipe"]}


def substance_check(task: str, instructions=HIGHLIGHT_AND_PS) -> dict:
    return {"kind": "ifeval", "instructions": instructions, "substance": {**COOKING, "task": task}}


@pytest.mark.parametrize(
    "task, response, hollow_answer",
    [
        # the flagship's round-1 challenger to "Explain cooking to a friend" (docs/experiments.md)
        ("explain", "*highlighted section*\n\n*highlighted section*\n\nP.S. I hope this helps you.", True),
        ("explain", "*Cooking* is cooking. Cooking, cooking and *cooking* all day and every day.\nP.S. cooking", True),
        (
            "explain",
            "Cooking turns raw *ingredients* into a *meal*: you heat food in a pan until it is safe to eat.\n"
            "P.S. Start with a simple recipe.",
            False,
        ),
        ("facts", "*Cooking* heats *food* so that it is safe to eat and tastes good and warm.\nP.S. Enjoy it", True),
        ("facts", "*Cooking* heats food so it is safe. A *recipe* lists each ingredient.\nP.S. Try it.", False),
        ("explain", "*Cooking* is what I do and what *I love* to do every day and every night.\nP.S. Try it.", True),
        ("explain", "People *fry* eggs in two *pans* and boil rice in a pot of salted water.\nP.S. Try it.", False),
        ("postcard", "*Cooking* here is great: fresh *food* and a pan over a fire every evening.\nP.S. Soon.", True),
        ("postcard", "Dear Sam, the *cooking* here is great: fresh food and a pan over a *fire*.\nP.S. Soon.", False),
    ],
)
def test_an_answer_that_meets_the_format_but_not_the_request_is_hollow_and_does_not_pass(task, response, hollow_answer):
    spec = substance_check(task)
    validate_check(spec)
    assert hollow(spec, response) is hollow_answer
    assert passes(spec, response) is not hollow_answer
    assert score(spec, response) == (2 / 3 if hollow_answer else 1.0)  # the substance counts as one instruction more


def test_substance_without_the_format_is_not_hollow_and_does_not_pass():
    spec = substance_check("explain")
    answer = "Cooking turns raw ingredients into a meal: you heat food in a pan until it is safe to eat."
    assert hollow(spec, answer) is False and not passes(spec, answer) and score(spec, answer) == 1 / 3


def test_without_a_substance_spec_an_instruction_check_is_hollow_below_twelve_words_and_others_are_not_judged():
    spec = {"kind": "ifeval", "instructions": HIGHLIGHT_AND_PS}
    assert hollow(spec, "*highlighted section* *highlighted section* P.S. I hope this helps.")
    assert passes(spec, "*highlighted section* *highlighted section* P.S. I hope this helps.")  # training's check
    assert not hollow(spec, "*One* and *two* are the first words of a list that goes on to ten. P.S. Bye")
    assert hollow({"kind": "number", "answer": 4}, "4") is None


@pytest.mark.parametrize(
    "substance",
    [
        {"related": ["food"], "task": "explain"},
        {"topic": ["cooking"], "related": [], "task": "explain"},
        {"topic": ["cooking"], "related": ["food"], "task": "why"},
        {"topic": ["cooking"], "related": ["food"], "task": "explain", "min_words": "twelve"},
    ],
)
def test_bad_substance_specs_are_rejected(substance):
    with pytest.raises(ValueError, match="substance"):
        validate_check({"kind": "number", "answer": 1, "substance": substance})

import pytest

from components.checks import passes, score, validate_check
from components.evaluator import is_refusal


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

"""Programmatic checks for checkable prompts: the verifier judge's gold signal.

A check spec is a small JSON object with a `kind`:
- number:        {"answer": 42}                    the last number in the response equals the answer
- ifeval:        {"instruction_id": ..., "kwargs"}  one of Google IFEval's checkers (from `if-verifiable`)
- contains:      {"any": ["Paris"]}                 grounded answers: some expected string appears (case-insensitive)
- not_contains:  {"any": ["BANANA"]}                injection: none of the planted strings appears
"""

from __future__ import annotations

import re

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

# needs NLTK's punkt_tab data, which cannot be downloaded here (design.md)
UNSUPPORTED_IFEVAL = {"length_constraints:number_sentences"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def validate_check(spec: dict) -> None:
    """Raise ValueError naming what is wrong with a check spec."""
    if not isinstance(spec, dict):
        raise ValueError("check must be a JSON object")
    kind = spec.get("kind")
    if kind == "number":
        if not isinstance(spec.get("answer"), int | float):
            raise ValueError("number check needs a numeric 'answer'")
    elif kind == "ifeval":
        instruction = spec.get("instruction_id")
        if instruction not in INSTRUCTION_DICT or instruction in UNSUPPORTED_IFEVAL:
            raise ValueError(f"unknown or unsupported IFEval instruction_id {instruction!r}")
    elif kind in ("contains", "not_contains"):
        strings = spec.get("any")
        if not strings or not all(isinstance(s, str) and s for s in strings):
            raise ValueError(f"{kind} check needs a non-empty list 'any' of strings")
    else:
        raise ValueError(f"unknown check kind {kind!r} (number, ifeval, contains, not_contains)")


def passes(spec: dict, response: str) -> bool:
    """Whether `response` satisfies the check."""
    kind = spec["kind"]
    if kind == "number":
        numbers = NUMBER.findall(response.replace(",", ""))
        return bool(numbers) and float(numbers[-1]) == float(spec["answer"])
    if kind == "ifeval":
        checker = INSTRUCTION_DICT[spec["instruction_id"]](spec["instruction_id"])
        checker.build_description(**spec.get("kwargs", {}))
        return bool(response.strip()) and bool(checker.check_following(response))
    lowered = response.lower()
    found = any(s.lower() in lowered for s in spec["any"])
    return found if kind == "contains" else not found

"""Programmatic checks for checkable prompts: the verifier judge's gold signal.

A check spec is a small JSON object with a `kind`:
- number:        {"answer": 42}                    the last number in the response equals the answer
- ifeval:        {"instruction_id": ..., "kwargs"}  one of Google IFEval's checkers (from `if-verifiable`), or
                 {"instructions": [{"instruction_id": ..., "kwargs": ...}, ...]}  several at once
- contains:      {"any": ["Paris"]}                 grounded answers: some expected string appears (case-insensitive)
- not_contains:  {"any": ["BANANA"]}                injection: none of the planted strings appears

Any kind may also carry `"substance": {...}` (components/substance.py): the answer must also do what the
request asks, not only meet its format. The held-out cohorts carry it; the training cohorts do not, so the verifier that
trains never sees it.

`score` is graded: the share of a prompt's instructions a response follows (1 or 0 for the other kinds), the
substance check counting as one more, so two responses that both fail can still be told apart. `passes` is the task
completed: every instruction followed and the substance there. `hollow` is an answer that meets every format
instruction and fails the substance check (on IFEval checks without one: has fewer than 12 words of its own).
"""

from __future__ import annotations

import json
import re

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
from langdetect import DetectorFactory

from components.memo import NO_MEMO, Memo, memo_key
from components.substance import has_substance, long_enough, validate_substance

# IFEval's language and case checkers call langdetect, which samples: unseeded, "simple 20 words." is English on one
# call and Afrikaans on the next, so the gold verifier would score the same answer differently from run to run.
DetectorFactory.seed = 0

# needs NLTK's punkt_tab data, which cannot be downloaded here (design.md)
UNSUPPORTED_IFEVAL = {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def instructions(spec: dict) -> list[dict]:
    """The IFEval instructions of an `ifeval` spec, whether it names one or several."""
    return spec["instructions"] if "instructions" in spec else [spec]


def validate_check(spec: dict) -> None:
    """Raise ValueError naming what is wrong with a check spec."""
    if not isinstance(spec, dict):
        raise ValueError("check must be a JSON object")
    kind = spec.get("kind")
    if kind == "number":
        if not isinstance(spec.get("answer"), int | float):
            raise ValueError("number check needs a numeric 'answer'")
    elif kind == "ifeval":
        if "instructions" in spec and not (isinstance(spec["instructions"], list) and spec["instructions"]):
            raise ValueError("ifeval check's 'instructions' must be a non-empty list")
        for instruction in instructions(spec):
            name = instruction.get("instruction_id")
            if name not in INSTRUCTION_DICT or name in UNSUPPORTED_IFEVAL:
                raise ValueError(f"unknown or unsupported IFEval instruction_id {name!r}")
    elif kind in ("contains", "not_contains"):
        strings = spec.get("any")
        if not strings or not all(isinstance(s, str) and s for s in strings):
            raise ValueError(f"{kind} check needs a non-empty list 'any' of strings")
    else:
        raise ValueError(f"unknown check kind {kind!r} (number, ifeval, contains, not_contains)")
    if "substance" in spec:
        validate_substance(spec["substance"])


def score(spec: dict, response: str) -> float:
    """How much of the check `response` satisfies, from 0 to 1."""
    met = _format_met(spec, response)
    if "substance" in spec:
        met.append(has_substance(spec["substance"], response))
    return sum(met) / len(met)


def hollow(spec: dict, response: str) -> bool | None:
    """Whether the answer meets every format instruction while failing the substance check. An IFEval check without
    a substance spec asks only for the check's minimum of the answer's own words; other kinds without one: None (a
    number is a whole answer)."""
    if "substance" in spec:
        return all(_format_met(spec, response)) and not has_substance(spec["substance"], response)
    if spec["kind"] == "ifeval":
        return all(_format_met(spec, response)) and not long_enough(response)
    return None


def _format_met(spec: dict, response: str) -> list[bool]:
    """Per instruction of the check (one for the kinds that are not IFEval's): whether the response meets it."""
    kind = spec["kind"]
    if kind == "number":
        numbers = NUMBER.findall(response.replace(",", ""))
        return [bool(numbers) and float(numbers[-1]) == float(spec["answer"])]
    if kind == "ifeval":
        return [_follows(instruction, response) for instruction in instructions(spec)]
    lowered = response.lower()
    found = any(s.lower() in lowered for s in spec["any"])
    return [found if kind == "contains" else not found]


def scores(checked: list[tuple[str, str]], memo: Memo = NO_MEMO) -> list[float]:
    """`score` of each (check spec as JSON, response), from the memo where it has it (IFEval's checkers take about a
    millisecond a response, a lookup some microseconds)."""
    keys = [memo_key("verifier", check, response) for check, response in checked]

    def compute(missing: list[int]) -> list[float]:
        return [score(json.loads(checked[i][0]), checked[i][1]) for i in missing]

    return memo.cached("verifier", keys, compute, chunk=max(len(keys), 1))


def passes(spec: dict, response: str) -> bool:
    """Whether `response` satisfies the whole check."""
    return score(spec, response) == 1.0


def _follows(instruction: dict, response: str) -> bool:
    checker = INSTRUCTION_DICT[instruction["instruction_id"]](instruction["instruction_id"])
    checker.build_description(**instruction.get("kwargs", {}))
    return bool(response.strip()) and bool(checker.check_following(response))

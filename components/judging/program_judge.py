"""Program judge: the AI judge writes a check function for each instruction in the request, and runs it.

A 1.5B judge cannot see whether an answer is lowercase, under 20 words or free of commas (tokens hide the letters),
but as a coder it writes the function that tests it (as in AutoIF, Dong et al. 2024). Each sentence of the request
is one instruction; the judge writes `check(response)` for it once (greedy, cached by the sentence), or one that
returns None when code cannot decide (a topic, facts, tone); with `check_the_task`, the request's own task ("Describe
the ocean.") is asked a check too, of enough words and words of its topic, so that the format alone no longer wins.
Each function runs on both answers in a sandbox
(`components/judging/check_sandbox.py`); the answer that meets more of the decidable instructions is better. An
item that no check separates (none is decidable, or both answers meet the same share) goes to the fallback judge: the
same model, pointwise; or, with `fallback: none`, abstains.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from components.judging import isolation
from components.judging.check_sandbox import ERROR
from components.judging.judge import Judge, Verdict, second_opinion
from components.judging.scorers import Scorer
from components.memo import NO_MEMO, Memo, memo_key
from components.models import chat_turn
from components.progress import progress

SANDBOX = Path(__file__).resolve().parent / "check_sandbox.py"
CODE_START, CODE_END = "```python\n", "```"
MAX_CODE_TOKENS = 256  # a check is a few lines; a reply cut off at the cap fails to parse and decides nothing

ASK = """Write a Python function `check(response: str)` that tests whether an assistant's response \
follows one instruction from a user's request. The response is only the assistant's answer: it does not contain the \
instruction. Return True if the response follows the instruction and False if it does not. {undecidable} \
A question with one computed answer is checked by computing it. Use only the modules re and string. \
Reply with the code only.

Instruction: "Use at most 3 sentences."
```python
import re

def check(response: str):
    sentences = [s for s in re.split(r"[.!?]+", response) if s.strip()]
    return len(sentences) <= 3
```

Instruction: "Start your reply with the word 'Hello'."
```python
def check(response: str):
    return response.strip().startswith("Hello")
```

Instruction: "What is 7 * 8?"
```python
import re

def check(response: str):
    numbers = re.findall(r"-?\\d+", response.replace(",", ""))
    return bool(numbers) and numbers[-1] == str(7 * 8)
```

Instruction: "Describe a sunset over the sea."
```python
{open_request}```

Instruction: "{{instruction}}"
"""
FORMAT_ONLY = dict(
    undecidable="Return None if code cannot decide it (the instruction is about a topic, facts, tone or quality).",
    open_request="def check(response: str):\n    return None\n",
)
# `check_the_task`: the request's own task gets a check of its substance too, where FORMAT_ONLY declines it and so
# leaves a hollow answer that meets the format unpunished (docs/experiments.md).
WITH_THE_TASK = dict(
    undecidable="If the instruction is the request itself (a topic to describe, explain or list facts about), check "
    "that the response really answers it: enough words, and words that a real answer on that topic would use besides "
    "the topic's own name. Return None only if code cannot decide it (tone or quality).",
    open_request="""import re

def check(response: str):
    words = re.findall(r"[a-z]+", response.lower())
    related = ("sky", "sun", "orange", "red", "light", "horizon", "wave", "water", "evening", "glow", "colour")
    return len(words) >= 15 and any(word in related for word in words)
""",
)
PROGRAM_INSTRUCTIONS = ASK.format(**FORMAT_ONLY)
TASK_INSTRUCTIONS = ASK.format(**WITH_THE_TASK)


def instructions(row: dict) -> list[str]:
    """The request's sentences: IFEval-style requests state one instruction per sentence."""
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", row["prompt"].strip()) if s]


def code_writer(
    scorer: Scorer, tokenizer: PreTrainedTokenizerBase, prompt_style: str, check_the_task: bool
) -> Callable[[str], str]:
    """The judge model as a writer of code: its greedy reply, begun with CODE_START, to the prompt that asks for one
    instruction's check (with `check_the_task`, the one that asks the request's own task to be checked too)."""
    asked = TASK_INSTRUCTIONS if check_the_task else PROGRAM_INSTRUCTIONS

    def write(instruction: str) -> str:
        prompt = asked.format(instruction=instruction)
        if prompt_style == "chat":
            prompt = chat_turn(tokenizer, prompt)
        return scorer.complete(prompt + CODE_START, MAX_CODE_TOKENS, CODE_END)

    return write


def run_check(code: str, responses: list[str]) -> list[bool | str | None]:
    """What `code`'s check returned for each response in the OS sandbox (True, False or None), or ERROR. Raises
    IsolationUnavailable where the machine cannot isolate it: model-written code never runs outside."""
    printed = isolation.run_python(SANDBOX, json.dumps({"code": code, "responses": responses}), 10 + len(responses))
    try:
        results = json.loads(printed) if printed is not None else None
    except json.JSONDecodeError:
        results = None
    if not isinstance(results, list) or len(results) != len(responses):
        return [ERROR] * len(responses)
    return [r if r is True or r is False or r is None else ERROR for r in results]


class ProgramJudge:
    def __init__(self, name: str, write: Callable[[str], str], fallback: Judge | None, memo: Memo = NO_MEMO):
        """`write(instruction)` returns the code of the judge model's check for it (`code_writer`); what each check
        returned on each response is kept in `memo`. Without a `fallback`, what no check separates abstains."""
        self.name, self.write, self.fallback, self.memo = name, write, fallback, memo
        self.programs: dict[str, str] = {}  # by instruction: the check the model wrote
        self._results: dict[tuple[str, str], bool | str | None] = {}  # by (instruction, response): as returned
        self._decides: dict[str, bool] = {}  # by instruction: its check returned True or False at least once

    def judge(self, items: list[tuple[dict, str, str]]) -> list[Verdict]:
        self._write_programs({i for row, _, _ in items for i in instructions(row)})
        self._run_programs(items)
        verdicts = [self._verdict(row, a, b) for row, a, b in items]
        undecided = [i for i, v in enumerate(verdicts) if v.abstained]
        if self.fallback:
            second_opinion(self.fallback, items, verdicts, undecided, lambda v: v.rationale)
        return verdicts

    def _write_programs(self, wanted: set[str]) -> None:
        new = sorted(wanted - self.programs.keys())
        for instruction in progress(new, f"{self.name} writes checks", "check"):
            reply = self.write(instruction)
            self.programs[instruction] = reply.split(CODE_END)[0]

    def _run_programs(self, items: list[tuple[dict, str, str]]) -> None:
        wanted: dict[str, set[str]] = {}
        for row, a, b in items:
            for instruction in instructions(row):
                wanted.setdefault(instruction, set()).update(r for r in (a, b) if (instruction, r) not in self._results)
        for instruction, responses in wanted.items():
            ordered = sorted(responses)
            for response, result in zip(ordered, self._check(self.programs[instruction], ordered), strict=True):
                self._results[instruction, response] = result
                self._decides[instruction] = self._decides.get(instruction, False) or isinstance(result, bool)

    def _check(self, code: str, responses: list[str]) -> list[bool | str | None]:
        """What `code` returns on each response: from the memo, or from one sandbox run over the rest."""
        keys = [memo_key("check", code, response) for response in responses]
        run = lambda missing: run_check(code, [responses[i] for i in missing])  # noqa: E731
        return self.memo.cached("checks", keys, run, chunk=max(len(keys), 1))

    def _met(self, instruction: str, response: str) -> bool | None:
        """Whether the response meets the instruction by its check, or None when the check cannot say. A check that
        returns None on some responses and a verdict on others meant None as False (a failed `re.search`); one
        that returns None on every response declined the instruction."""
        result = self._results[instruction, response]
        if result is None and self._decides[instruction]:
            return False
        return result if isinstance(result, bool) else None

    def _verdict(self, row: dict, a: str, b: str) -> Verdict:
        """The share of decidable instructions each answer meets, compared; it abstains when no instruction is
        decidable or both shares are equal."""
        met = [(i, self._met(i, a), self._met(i, b)) for i in instructions(row)]
        met = [(i, ma, mb) for i, ma, mb in met if ma is not None and mb is not None]
        if not met:
            return Verdict(0.5, True, True, "no instruction that code can check")
        share_a, share_b = (sum(m[k] for m in met) / len(met) for k in (1, 2))
        differ = "; ".join(f"'{i}' A {ma}, B {mb}" for i, ma, mb in met if ma != mb)
        rationale = f"checks met: A {share_a:.2f}, B {share_b:.2f} of {len(met)}" + (f" ({differ})" if differ else "")
        return Verdict(
            0.5 + (share_a - share_b) / 2, True, share_a == share_b, rationale, f"{self.name} written checks"
        )

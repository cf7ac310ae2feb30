"""Critique and revise: Constitutional AI's supervised phase, as preference pairs (`pairs.kind: revise`).

A reviser reads a sample against the constitution, writes a critique, then rewrites the sample. The revision is the
chosen answer and the original the rejected one, and DPO trains on them like any judged pair: the same trainer, the
champion as reference, and the original's faults as the negative signal (SFT on the revisions alone would drop that
signal and need a second training path). The critique is the pair's rationale.

A revision is kept only when it passes the prompt's check (where one exists, unless `check_revisions` is off, as
a run trained from AI feedback alone needs) and the training judge prefers it to the original; otherwise its row is
an abstention whose rationale says why, so the drops are counted. The filter is the training judge, not the
evaluation judge: the evaluation judge must not shape what the challenger learns.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from components.checks import passes
from components.data import user_message
from components.generation.generator import Generator
from components.judging.judge import Judge
from components.judging.pairs import decided_by, judge_label
from components.judging.scorers import open_gguf
from components.progress import progress

SHOWN = """Principles:
{constitution}

Request:
<<<
{request}
>>>

Answer:
<<<
{answer}
>>>

"""
CRITIQUE = (
    SHOWN + "In one or two sentences, name the most important way the answer breaks a principle or fails the request."
)
REVISION = (
    SHOWN
    + """Critique: {critique}

Rewrite the answer so that it fixes what the critique names and follows the principles. Reply with the new answer
only."""
)

# The start of a dropped revision's rationale, by the reason it was dropped (counted per round).
DROPPED = {
    "failed_check": "revision dropped: it fails the prompt's check",
    "not_preferred": "revision dropped: the training judge does not prefer it",
}


class Reviser(Protocol):
    name: str

    def reply(self, messages: list[str], max_new_tokens: int) -> list[str]:
        """The reviser's greedy reply to each user message."""
        ...


class GeneratorReviser:
    """A transformers model (the champion, or another checkpoint) replying through a `Generator`."""

    def __init__(self, generator: Generator, name: str):
        self.generator, self.name = generator, name

    def reply(self, messages: list[str], max_new_tokens: int) -> list[str]:
        rows = [{"id": f"revise-{i}", "prompt": m, "context": ""} for i, m in enumerate(messages)]
        replies = {g["prompt_id"]: g["response"] for g in self.generator.generate(rows, 1, 0)}
        return [replies[row["id"]].strip() for row in rows]


class LlamaCppReviser:
    """A GGUF model (e.g. the embedded Qwen2.5-Coder-1.5B) replying through llama.cpp's chat completion."""

    def __init__(self, gguf: Path, name: str, context_tokens: int, temperature: float):
        self.llm = open_gguf(gguf, context_tokens)
        weakref.finalize(self, self.llm.close)  # before interpreter teardown, where Llama.__del__ fails
        self.name, self.temperature = name, temperature

    def reply(self, messages: list[str], max_new_tokens: int) -> list[str]:
        replies = []
        for message in progress(messages, f"{self.name} replies", "reply"):
            out = self.llm.create_chat_completion(
                [{"role": "user", "content": message}], max_tokens=max_new_tokens, temperature=self.temperature
            )
            replies.append((out["choices"][0]["message"]["content"] or "").strip())
        return replies


@dataclass(frozen=True)
class Revisions:
    """`pairs.kind: revise`: each sample critiqued and revised by `reviser` (`revise_pairs`)."""

    reviser: Reviser
    constitution: str
    per_prompt: int
    max_new_tokens: int
    check_revisions: bool

    def pairs(self, judge: Judge, prompts: list[dict], samples: list[dict]) -> list[dict]:
        return revise_pairs(
            self.reviser,
            judge,
            self.constitution,
            prompts,
            samples,
            self.per_prompt,
            self.max_new_tokens,
            self.check_revisions,
        )


def critique_and_revise(
    reviser: Reviser, constitution: str, items: list[tuple[dict, str]], max_new_tokens: int
) -> tuple[list[str], list[str]]:
    """The reviser's critique of each (prompt row, answer), then its rewrite of the answer that fixes it."""
    asked = [dict(constitution=constitution, request=user_message(row), answer=answer) for row, answer in items]
    critiques = reviser.reply([CRITIQUE.format(**a) for a in asked], max_new_tokens)
    revisions = reviser.reply(
        [REVISION.format(**a, critique=c) for a, c in zip(asked, critiques, strict=True)], max_new_tokens
    )
    return critiques, revisions


def revise_pairs(
    reviser: Reviser,
    judge: Judge,
    constitution: str,
    prompts: list[dict],
    generations: list[dict],
    per_prompt: int,
    max_new_tokens: int,
    check_revisions: bool,
) -> list[dict]:
    """Per prompt, its first `per_prompt` distinct samples critiqued and revised: a pair row for each revision
    (an abstention when it was dropped, with the reason). Unless `check_revisions` is off, a revision that fails its
    prompt's check is dropped."""
    by_prompt: dict[str, list[str]] = {}
    for g in sorted(generations, key=lambda g: (g["prompt_id"], g["sample"])):
        by_prompt.setdefault(g["prompt_id"], []).append(g["response"])
    items = [(row, s) for row in prompts for s in list(dict.fromkeys(by_prompt.get(row["id"], [])))[:per_prompt]]
    critiques, revisions = critique_and_revise(reviser, constitution, items, max_new_tokens)
    verdicts = judge.judge([(row, revision, s) for (row, s), revision in zip(items, revisions, strict=True)])
    rows = []
    for (row, original), critique, revision, verdict in zip(items, critiques, revisions, verdicts, strict=True):
        reason = None
        if check_revisions and row.get("check") and not passes(json.loads(row["check"]), revision):
            reason = "failed_check"
        elif verdict.abstained or verdict.p_a <= 0.5:
            reason = "not_preferred"
        rationale = f"critique: {critique}" if reason is None else f"{DROPPED[reason]}; critique: {critique}"
        rows.append(
            {
                "prompt_id": row["id"],
                "cohort": row["cohort"],
                "prompt": user_message(row),
                "chosen": revision,
                "rejected": original,
                "judge": f"revise:{reviser.name}+{judge_label(judge, row)}",
                "p_chosen": verdict.p_a,
                "margin": max(2 * verdict.p_a - 1, 0.0),
                "order_consistent": verdict.order_consistent,
                "abstained": reason is not None,
                "rationale": rationale,
                "decided_by": "" if reason else decided_by(judge, row, verdict),
            }
        )
    return rows


def dropped(pairs: list[dict]) -> dict[str, int]:
    """How many revisions were dropped, by reason (empty when no row is a revision)."""
    if not any(p["judge"].startswith("revise:") for p in pairs):
        return {}
    return {reason: sum(p["rationale"].startswith(text) for p in pairs) for reason, text in DROPPED.items()}

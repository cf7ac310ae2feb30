"""The review queue: which of a round's pairs deserve a person's eye, and what the people's answers mean.

Queued each round, at most `limit` of each:
- `train`: training pairs the training judge abstained on, or decided with its two orders disagreeing. A person's
  label makes the pair gold: it joins the next round's training pairs, over any judge's verdict on it.
- `heldout`: held-out prompts where the evaluation judge and the verifier disagree on challenger vs champion, or
  the evaluation judge and the champion judging itself do (with `evaluation.self_agreement`), and, in a round
  the gate blocked on task completion, the prompts whose failed check lowered it. A person's label
  says which was right; it never trains anything (the prompts are held out).

An item shows its two answers in an order fixed by the prompt id, not by any judge's verdict, so the person is
not nudged. Verdicts are "A", "B" or "tie".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

HUMAN = "human"  # the judge name of a pair a person labelled
QUEUED = "review-queue.json"  # in a round's directory: trace id -> the item as the round queued it
VERIFIER = "verifier"
SELF = "self"  # the champion judging itself, beside the evaluation judge
# Set by a team stack for its worker: its TLS proxy's access log, which alone knows the account that wrote a label.
ACCESS_LOG_ENV = "RATCHET_PROXY_ACCESS_LOG"


@dataclass(frozen=True)
class ReviewItem:
    split: Literal["train", "heldout"]
    prompt_id: str
    cohort: str
    prompt: str
    answer_a: str
    answer_b: str
    why: str
    verdicts: dict[str, str] = field(default_factory=dict)  # judge name -> "A" | "B" | "tie"
    rationales: dict[str, str] = field(default_factory=dict)
    labelled_by: str = ""  # read back with a person's label: the account that wrote it where the stack knows it


def save_queued(round_dir: Path, trace_ids: list[str], items: list[ReviewItem]) -> None:
    """The round's own record of what it queued: the only labels a later round reads are those on these traces,
    with the text and split from here, never from the trace (which anyone who can write to MLflow can change)."""
    record = {trace_id: asdict(item) for trace_id, item in zip(trace_ids, items, strict=True)}
    partial = round_dir / f"{QUEUED}.partial"
    partial.write_text(json.dumps(record))
    partial.rename(round_dir / QUEUED)


class Queued(NamedTuple):
    round: int
    item: ReviewItem
    at: float  # when the round recorded it (seconds since the epoch): its judges' assessments were written before


def queued_by_round(bootstrap_dir: Path) -> dict[str, Queued]:
    """Trace id -> what queued it, for everything the bootstrap's rounds queued (a superseded round's too)."""
    found = {}
    for path in bootstrap_dir.glob(f"round-*/{QUEUED}"):
        k, at = int(re.match(r"round-(\d+)", path.parent.name)[1]), path.stat().st_mtime
        found |= {
            trace_id: Queued(k, ReviewItem(**item), at) for trace_id, item in json.loads(path.read_text()).items()
        }
    return found


def _swapped(prompt_id: str) -> bool:
    return hashlib.sha256(prompt_id.encode()).digest()[0] % 2 == 1


def _ordered(prompt_id: str, first: str, second: str, first_wins: bool | None) -> tuple[str, str, str]:
    """(answer A, answer B, the verdict for `first_wins`) with the answers in the prompt's fixed order."""
    swap = _swapped(prompt_id)
    a, b = (second, first) if swap else (first, second)
    verdict = "tie" if first_wins is None else ("A" if first_wins != swap else "B")
    return a, b, verdict


def training_items(pairs: list[dict], limit: int) -> list[ReviewItem]:
    """Abstained pairs first, then pairs whose judge's two orders disagreed; never a pair of identical answers."""
    doubtful = [p for p in pairs if p["chosen"] != p["rejected"] and (p["abstained"] or not p["order_consistent"])]
    doubtful.sort(key=lambda p: (not p["abstained"], p["prompt_id"]))
    items = []
    for p in doubtful[:limit]:
        a, b, verdict = _ordered(p["prompt_id"], p["chosen"], p["rejected"], None if p["abstained"] else True)
        why = "the training judge abstained" if p["abstained"] else "the training judge's two orders disagreed"
        items.append(
            ReviewItem(
                "train",
                p["prompt_id"],
                p["cohort"],
                p["prompt"],
                a,
                b,
                why,
                {p["judge"]: verdict},
                {p["judge"]: p["rationale"] or ""},
            )
        )
    return items


def _says(score: float | None) -> bool | None:
    """Whether a judge's score says the challenger is better; None when it abstained or did not judge."""
    return None if score is None or score == 0.5 else score > 0.5


def heldout_items(
    prompts: dict[str, str], rows: list[dict], judge_name: str, limit: int, blocked_on_tasks: bool = False
) -> list[ReviewItem]:
    """Held-out prompts where the verifier separates challenger and champion and the evaluation judge picked the
    other one (or abstained); where the challenger failed a check the champion passed, in a round the gate blocked
    on task completion (those prompts changed its outcome); or where the evaluation judge and the self-judge
    decided opposite ways. `rows` are the evaluation's rows (prompt_id, cohort, model, response, task_ok,
    judge_win, self_win); `prompts` maps a prompt id to its text."""
    by_prompt: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], {})[r["model"]] = r
    items = []
    for prompt_id, pair in sorted(by_prompt.items()):
        challenger, champion = pair.get("challenger"), pair.get("champion")
        if not challenger or not champion or challenger["response"] == champion["response"]:
            continue
        checked = challenger["task_ok"] is not None and champion["task_ok"] is not None
        separated = checked and challenger["task_ok"] != champion["task_ok"]
        says = {judge_name: _says(challenger["judge_win"]), SELF: _says(challenger.get("self_win"))}
        if separated and says[judge_name] != challenger["task_ok"]:
            why = "the evaluation judge and the verifier disagree"
        elif separated and blocked_on_tasks and not challenger["task_ok"]:
            why = "the gate blocked the round on task completion, and this prompt lowered it"
        elif None not in says.values() and says[judge_name] != says[SELF]:
            why = "the evaluation judge and the self-judge disagree"
        else:
            continue
        says = {judge: verdict for judge, verdict in says.items() if judge != SELF or verdict is not None}
        says |= {VERIFIER: challenger["task_ok"]} if separated else {}
        texts = (challenger["response"], champion["response"])
        verdicts = {judge: _ordered(prompt_id, *texts, verdict)[2] for judge, verdict in says.items()}
        a, b, _ = _ordered(prompt_id, *texts, None)
        items.append(ReviewItem("heldout", prompt_id, challenger["cohort"], prompts[prompt_id], a, b, why, verdicts))
    return items[:limit]


def agreement(labelled: list[tuple[str, dict[str, str]]]) -> dict[str, tuple[float, int]]:
    """Per judge: the share of the human-labelled items on which its verdict matched the person's, and on how
    many items it gave one. `labelled` holds (the person's verdict, the judges' verdicts) per item."""
    counts: dict[str, list[int]] = {}
    for human, verdicts in labelled:
        for judge, verdict in verdicts.items():
            counts.setdefault(judge, []).append(int(verdict == human))
    return {judge: (sum(hits) / len(hits), len(hits)) for judge, hits in counts.items()}


def agreement_metrics(labelled: list[tuple[str, ReviewItem]], evaluation_judge: str) -> dict[str, float]:
    """The round's human-judge metrics (bare names): the training judge on reviewed training pairs, the evaluation
    judge on reviewed held-out pairs, each left out while nobody has labelled such a pair (a gate rule on it then
    reads "not measured")."""
    found = {"human_labels": float(len(labelled))}
    for name, split, keep in (
        ("human_agreement_training", "train", lambda judge: True),
        ("human_agreement_evaluation", "heldout", lambda judge: judge == evaluation_judge),
    ):
        hits = [
            verdict == human
            for human, item in labelled
            if item.split == split
            for judge, verdict in item.verdicts.items()
            if keep(judge)
        ]
        if hits:
            found[name] = sum(hits) / len(hits)
    return found


def gold_pairs(labelled: list[tuple[str, ReviewItem]]) -> list[dict]:
    """Pair rows (components/judging/pairs.py's columns) from human-labelled training items; a "tie" is no pair."""
    rows = []
    for human, item in labelled:
        if human == "tie" or item.split != "train":
            continue
        chosen, rejected = (item.answer_a, item.answer_b) if human == "A" else (item.answer_b, item.answer_a)
        rows.append(
            {
                "prompt_id": item.prompt_id,
                "cohort": item.cohort,
                "prompt": item.prompt,
                "chosen": chosen,
                "rejected": rejected,
                "judge": HUMAN,
                "p_chosen": 1.0,
                "margin": 1.0,
                "order_consistent": True,
                "abstained": False,
                "rationale": f"labelled by {item.labelled_by or 'a person'} in the review queue",
                "decided_by": HUMAN,
            }
        )
    return rows


def labelled_calibration_pairs(labelled: list[tuple[str, ReviewItem]]) -> list[dict]:
    """Gold pairs for `ratchet judge-check --from-review` (components/judge_check.py's columns) from every
    human-labelled item, training and held-out alike: a person's label measures a judge either way. A "tie" is no
    pair; the category is the item's split and cohort."""
    rows = []
    for n, (human, item) in enumerate(labelled):
        if human == "tie":
            continue
        better, worse = (item.answer_a, item.answer_b) if human == "A" else (item.answer_b, item.answer_a)
        category = f"{item.split}:{item.cohort}"
        rows.append({"id": f"review-{n}-{item.prompt_id}", "prompt": item.prompt, "better": better, "worse": worse})
        rows[-1] |= {"category": category, "cohort": item.cohort, "context": "", "check": ""}
    return rows


def with_gold(pairs: list[dict], gold: list[dict]) -> list[dict]:
    """The judge's pairs with the gold pairs added; a judge's row on the same prompt and answers gives way."""
    labelled = {(g["prompt_id"], frozenset((g["chosen"], g["rejected"]))) for g in gold}
    kept = [p for p in pairs if (p["prompt_id"], frozenset((p["chosen"], p["rejected"]))) not in labelled]
    return kept + gold

"""The substance check: whether an answer does what its request asks, beyond the format instructions it carries.

IFEval's checkers read only the format, so "*highlighted section*\\n\\nP.S. I hope this helps." passes "Explain cooking
to a friend. Highlight a section ... add a postscript". A substance spec, written from the data that made the prompt
(its topic and its task, data/make_efficacy_cohorts.py), asks three things of the answer's own prose, that is the
answer without what the instructions make it write (highlight markers, titles, placeholders, section and paragraph
marks, the postscript's marker, set closing phrases and polite filler):

- at least `min_words` words of it;
- the request's topic: a word from `related` that is not the topic's own word (so echoing the topic is not
  enough);
- the task: `facts` wants at least two sentences or list items; `postcard` a greeting or a sign-off; `explain`
  nothing more. (A `why` task that wanted a reason word was dropped: on SmolLM2's own answers it failed real
  reasons given without "because", docs/experiments.md.)

Spec: {"topic": ["chocolate"], "related": ["cocoa", "sweet", ...], "task": "explain", "min_words": 12}
"""

from __future__ import annotations

import re

TASKS = ("explain", "facts", "postcard")
MIN_WORDS = 12

_SCAFFOLDING = [
    r"\*+\s*highlighted section\s*\*+",  # the literal example the highlight instruction shows
    r"<<[^>]*>>",  # a title
    r"\[[^\]]*\]",  # a placeholder
    r"\b(?:section|paragraph)\s*\d+\b",  # section marks
    r"\*\*\*",  # paragraph dividers
    r"\bp\.\s?(?:p\.\s?)?s\.",  # the postscript's marker
    r"is there anything else i can help with\??",
    r"\bi hope (?:this|that|it) helps?(?: you)?\b[.!]?",
    r"\blet me know if you (?:have|need) (?:any )?(?:more |other )?(?:questions|help)\b[.!]?",
]
_SCAFFOLDING_RE = re.compile("|".join(_SCAFFOLDING), re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z'-]*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n\s*(?:[-*•]|\d+[.)])\s+")
_POSTCARD = re.compile(
    r"\b(dear|hi|hello|hey|greetings|wish you|wishing you|you would love|love from|love,|best wishes|all the best|"
    r"cheers|regards|see you|miss you|yours|take care|hope you|writing to you|from [a-z]+\s*$)\b",
    re.IGNORECASE,
)


def validate_substance(spec: dict) -> None:
    """Raise ValueError naming what is wrong with a substance spec."""
    if not isinstance(spec, dict):
        raise ValueError("substance must be a JSON object")
    for field in ("topic", "related"):
        words = spec.get(field)
        if not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise ValueError(f"substance needs a non-empty list '{field}' of words")
    if spec.get("task") not in TASKS:
        raise ValueError(f"substance 'task' must be one of {', '.join(TASKS)}, got {spec.get('task')!r}")
    if not isinstance(spec.get("min_words", MIN_WORDS), int):
        raise ValueError("substance 'min_words' must be an integer")


def prose(response: str) -> str:
    """The answer without what its format instructions make it write."""
    text = _SCAFFOLDING_RE.sub(" ", response)
    return re.sub(r"[*#_`\"]+", " ", text)


def long_enough(response: str, min_words: int = MIN_WORDS) -> bool:
    """Whether the answer has at least `min_words` words of its own prose."""
    return len(_WORD.findall(prose(response).lower())) >= min_words


def has_substance(spec: dict, response: str) -> bool:
    """Whether the answer's own prose is long enough, about the topic, and does the task."""
    text = prose(response)
    words = _WORD.findall(text.lower())
    if len(words) < spec.get("min_words", MIN_WORDS):
        return False
    other_words = [w for w in words if not _matches(w, spec["topic"])]  # "cooking" is not a word related to cooking
    if not any(_matches(w, spec["related"]) for w in other_words) and not _has_phrase(text, spec["related"]):
        return False
    return _does_task(spec["task"], text)


def _matches(word: str, lexicon: list[str]) -> bool:
    """The word is an entry or a form of it: a longer word from an entry of 4 letters or more ("bean" finds
    "beans"), an inflection of a shorter one ("fly" finds "flying", not "flyer" nor "sea" "season")."""
    for entry in (e.lower() for e in lexicon if " " not in e):
        if word == entry or (len(entry) >= 4 and word.startswith(entry)):
            return True
        if len(entry) < 4 and word in {entry + ending for ending in ("s", "es", "ing", "ed", "ies")}:
            return True
    return False


def _has_phrase(text: str, lexicon: list[str]) -> bool:
    lowered = text.lower()
    return any(e.lower() in lowered for e in lexicon if " " in e)


def _does_task(task: str, text: str) -> bool:
    if task == "facts":
        parts = [p for p in _SENTENCE_END.split(text) if len(_WORD.findall(p.lower())) >= 3]
        return len(parts) >= 2
    if task == "postcard":
        return bool(_POSTCARD.search(text))
    return True

"""What scores GRPO/RLOO's fresh samples: reward functions in TRL's `reward_funcs` form, and their weights.

- `JudgeReward`: the training judge (the verifier's graded score where a check exists, else P(beats the champion's
  own sample)).
- `VerifierReward`: the verifier's graded score, None (no opinion) where the prompt has no check.
- The round's reward model goes in as its module and tokenizer (`reward_model.RewardModel`): TRL scores with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from components.checks import score
from components.judging.judge import Judge


@dataclass
class OnlineReward:
    """TRL's `reward_funcs`, `reward_processing_classes` (a tokenizer for a model, None for a function) and
    `reward_weights`: a sample's reward is the weighted sum of what each says (None counts as no opinion)."""

    funcs: list
    processing_classes: list = field(default_factory=lambda: [None])
    weights: list[float] = field(default_factory=lambda: [1.0])


def _texts(completions: list) -> list[str]:
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


class VerifierReward:
    """The share of the prompt's check the completion meets; None on prompts without a check."""

    __name__ = "verifier"  # TRL logs `rewards/verifier/mean`

    def __init__(self, prompts: list[dict]):
        self.checks = {row["id"]: row.get("check") for row in prompts}

    def __call__(self, prompts: list, completions: list, prompt_id: list[str], **_: object) -> list[float | None]:
        return [
            score(json.loads(self.checks[pid]), text) if self.checks[pid] else None
            for pid, text in zip(prompt_id, _texts(completions), strict=True)
        ]


class JudgeReward:
    """A judge as an online reward: the verifier's graded score where a check exists (RLVR), otherwise P(completion
    beats the champion's own sample for that prompt), an abstention counting 0.5."""

    __name__ = "judge"  # TRL names the logged reward column (`rewards/judge/mean`) after the reward function

    def __init__(self, judge: Judge, prompts: list[dict], anchors: dict[str, str]):
        self.judge, self.anchors = judge, anchors
        self.prompts = {row["id"]: row for row in prompts}
        self.verifier = VerifierReward(prompts)

    def __call__(self, prompts: list, completions: list, prompt_id: list[str], **_: object) -> list[float]:
        texts = _texts(completions)
        rows = [self.prompts[pid] for pid in prompt_id]
        rewards = self.verifier(prompts, completions, prompt_id)
        open_ended = [i for i, r in enumerate(rewards) if r is None]
        verdicts = self.judge.judge([(rows[i], texts[i], self.anchors[rows[i]["id"]]) for i in open_ended])
        for i, verdict in zip(open_ended, verdicts, strict=True):
            rewards[i] = 0.5 if verdict.abstained else verdict.p_a
        return rewards  # type: ignore[return-value]

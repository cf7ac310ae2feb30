"""Remote judge: any OpenAI-compatible `/v1/chat/completions` endpoint (`vllm serve`, hosted APIs).

The verdict is read from the log-probabilities of the first reply token ("A" vs "B") when the server returns
`top_logprobs`, else parsed from the reply's first letter. Both orders are asked, as for every AI judge.
The API key is read from an environment variable into a request header and goes nowhere else: not into the
judge's name, its verdicts, its errors or the config.
"""

from __future__ import annotations

import math
import re

from components import endpoints
from components.config.judges import RemoteJudgeConfig
from components.judging.judge import Verdict, combine_orders, judge_prompt


class RemoteJudge:
    """Asks a chat-completions endpoint which answer is better, in both orders, through the `openai` client
    (components/endpoints.py: bounded retries, typed errors), with at most `max_concurrency` requests in flight."""

    def __init__(self, config: RemoteJudgeConfig, rubric: str):
        self.config, self.rubric = config, rubric
        self.name = f"remote:{config.model}"
        self.endpoint = endpoints.client(config.base_url, config.api_key_env, config.timeout, config.max_retries)

    def judge(self, items: list[tuple[dict, str, str]]) -> list[Verdict]:
        prompts = [judge_prompt(self.rubric, row, a, b) for row, a, b in items]
        prompts += [judge_prompt(self.rubric, row, b, a) for row, a, b in items]
        answers = endpoints.each(self.config.max_concurrency, self._ask, prompts, f"judge {self.name}", "call")
        forward, swapped = answers[: len(items)], answers[len(items) :]
        return [self._verdict(f, s) for f, s in zip(forward, swapped, strict=True)]

    def _verdict(self, forward: tuple[float | None, str], swapped: tuple[float | None, str]) -> Verdict:
        (p_first, reply), (p_b_first, _) = forward, swapped
        if p_first is None or p_b_first is None:
            return Verdict(0.5, False, True, f"unparseable reply: {reply[:200]!r}")
        return combine_orders(p_first, 1.0 - p_b_first, self.config.abstain_margin, reply=f"reply {reply[:200]!r}")

    def _ask(self, prompt: str) -> tuple[float | None, str]:
        """P(first answer better) and the reply text, for one ordering."""
        c = self.config
        logprobs = {"logprobs": True, "top_logprobs": c.top_logprobs} if c.top_logprobs else {}
        with endpoints.calling(self.endpoint, f"the remote judge {c.model}"):
            completion = self.endpoint.chat.completions.create(
                model=c.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=c.max_tokens,
                temperature=0.0,
                **logprobs,
            )
            choice = completion.choices[0]
            reply = choice.message.content or ""
            first = choice.logprobs.content[0].top_logprobs if choice.logprobs and choice.logprobs.content else []
            alternatives = [(t.token, t.logprob) for t in first]
        p_a = label_probability(alternatives)
        return (p_a if p_a is not None else parse_label(reply)), reply.strip()


LABEL = re.compile(r"[\s*(\"'\[]*([AaBb])(?![A-Za-z])")


def label_probability(alternatives: list[tuple[str, float]]) -> float | None:
    """P(A) / (P(A) + P(B)) over the first token's top alternatives (token, log-probability); None when neither
    label is among them."""
    mass = {"A": 0.0, "B": 0.0}
    for token, logprob in alternatives:
        label = token.strip().upper()
        if label in mass:
            mass[label] += math.exp(logprob)
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None


def parse_label(reply: str) -> float | None:
    """1.0 for a reply that opens with the label A, 0.0 for B, None otherwise ("Bananas" names no answer)."""
    label = LABEL.match(reply)
    return {"A": 1.0, "B": 0.0}[label.group(1).upper()] if label else None

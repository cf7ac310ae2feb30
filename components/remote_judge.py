"""Remote judge: any OpenAI-compatible `/v1/chat/completions` endpoint (`vllm serve`, hosted APIs).

The verdict is read from the log-probabilities of the first reply token ("A" vs "B") when the server returns
`top_logprobs`, else parsed from the reply's first letter. Both orders are asked, as for every AI judge.
The API key is read from an environment variable into a request header and goes nowhere else: not into the
judge's name, its verdicts, its errors or the config.
"""

from __future__ import annotations

import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from tqdm.auto import tqdm

from components.judge import Verdict, combine_orders, judge_prompt
from components.judge_config import RemoteJudgeConfig

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RemoteJudgeError(RuntimeError):
    """The endpoint refused or could not be reached after the allowed retries."""


class RemoteJudge:
    """Asks a chat-completions endpoint which answer is better, in both orders, with bounded retries and
    at most `max_concurrency` requests in flight."""

    def __init__(self, config: RemoteJudgeConfig, rubric: str):
        self.config, self.rubric = config, rubric
        self.name = f"remote:{config.model}"
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key(config.api_key_env)}"} if config.api_key_env else {}

    def judge(self, items: list[tuple[dict, str, str]]) -> list[Verdict]:
        prompts = [judge_prompt(self.rubric, row, a, b) for row, a, b in items]
        prompts += [judge_prompt(self.rubric, row, b, a) for row, a, b in items]
        with httpx.Client(timeout=self.config.timeout, headers=self._headers) as http:
            with ThreadPoolExecutor(self.config.max_concurrency) as pool:
                asks = pool.map(lambda prompt: self._ask(http, prompt), prompts)
                answers = list(
                    tqdm(asks, total=len(prompts), desc=f"judge {self.name}", unit="call", leave=False, disable=None)
                )
        forward, swapped = answers[: len(items)], answers[len(items) :]
        return [self._verdict(f, s) for f, s in zip(forward, swapped, strict=True)]

    def _verdict(self, forward: tuple[float | None, str], swapped: tuple[float | None, str]) -> Verdict:
        (p_first, reply), (p_b_first, _) = forward, swapped
        if p_first is None or p_b_first is None:
            return Verdict(0.5, False, True, f"unparseable reply: {reply[:200]!r}")
        return combine_orders(p_first, 1.0 - p_b_first, self.config.abstain_margin, reply=f"reply {reply[:200]!r}")

    def _ask(self, http: httpx.Client, prompt: str) -> tuple[float | None, str]:
        """P(first answer better) and the reply text, for one ordering."""
        c = self.config
        body = {"model": c.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": c.max_tokens}
        body |= {"temperature": 0.0} | ({"logprobs": True, "top_logprobs": c.top_logprobs} if c.top_logprobs else {})
        choice = self._post(http, body)["choices"][0]
        reply = (choice.get("message") or {}).get("content") or ""
        p_a = label_probability(choice.get("logprobs"))
        return (p_a if p_a is not None else parse_label(reply)), reply.strip()

    def _post(self, http: httpx.Client, body: dict) -> dict:
        return post(http, self.url, body, self.config.max_retries)


def post(http: httpx.Client, url: str, body: dict, retries: int) -> dict:
    """POST `body` as JSON; the reply's JSON. Connection errors, 429 and 5xx are retried with backoff."""
    for attempt in range(retries + 1):
        try:
            response = http.post(url, json=body)
        except httpx.TransportError as err:
            problem = f"cannot reach {url}: {type(err).__name__}"
        else:
            if response.status_code == 200:
                return response.json() if response.content.strip().startswith((b"{", b"[")) else {}
            problem = f"{url} answered HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in RETRYABLE_STATUS:
                raise RemoteJudgeError(problem)
        if attempt < retries:
            time.sleep(min(2**attempt, 30))
    raise RemoteJudgeError(f"{problem} (after {retries + 1} attempts)")


def api_key(env_var: str) -> str:
    key = os.environ.get(env_var)
    if not key:
        raise RemoteJudgeError(f"the API key variable {env_var} is not set in the environment")
    return key


LABEL = re.compile(r"[\s*(\"'\[]*([AaBb])(?![A-Za-z])")


def label_probability(logprobs: dict | None) -> float | None:
    """P(A) / (P(A) + P(B)) over the first token's top alternatives; None when neither label is among them."""
    if not logprobs or not logprobs.get("content"):
        return None
    mass = {"A": 0.0, "B": 0.0}
    for alternative in logprobs["content"][0].get("top_logprobs") or []:
        label = alternative["token"].strip().upper()
        if label in mass:
            mass[label] += math.exp(alternative["logprob"])
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None


def parse_label(reply: str) -> float | None:
    """1.0 for a reply that opens with the label A, 0.0 for B, None otherwise ("Bananas" names no answer)."""
    label = LABEL.match(reply)
    return {"A": 1.0, "B": 0.0}[label.group(1).upper()] if label else None

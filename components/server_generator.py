"""Generate from running vLLM servers (`generation.kind: server`): OpenAI-compatible completions, spread across the
servers' URLs (data parallel), with the champion's adapter loaded into each server at runtime through vLLM's
`/v1/load_lora_adapter`, so a server keeps running from round to round.

A server runs with `--enable-lora`, a `--max-lora-rank` that fits the champion's chain, and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` in its environment (`vllm_server.start(lora=True)` does so here). vLLM serves
one adapter per request, so a chain of adapters is served as one: PEFT's `cat` combination stacks their low-rank
factors (rank r1 + r2 + ...), which is exact, because each round's adapter adds to the weights the earlier ones
changed. The adapter's directory must be readable by the servers (the shared workdir, docs/scaling.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from components.config import ModelsConfig, ServerGenerationConfig
from components.data import write_atomically
from components.generator import Sampling, chat_prompt, prompt_seed
from components.models import Policy, load_policy
from components.remote_judge import RemoteJudgeError, api_key, post


class ServerGenerator:
    def __init__(
        self,
        config: ServerGenerationConfig,
        policy: Policy,
        models: ModelsConfig,
        tokenizer: PreTrainedTokenizerBase,
        sampling: Sampling,
    ):
        self.config, self.policy, self.models, self.tokenizer, self.sampling = (
            config,
            policy,
            models,
            tokenizer,
            sampling,
        )
        self.urls = [url.rstrip("/") for url in config.urls]
        self._headers = {"Authorization": f"Bearer {api_key(config.api_key_env)}"} if config.api_key_env else {}

    def generate(self, prompts: list[dict], n: int, seed: int) -> list[dict]:
        with httpx.Client(timeout=self.config.timeout, headers=self._headers) as http:
            model = self._serve_champion(http)
            with ThreadPoolExecutor(self.config.max_concurrency) as pool:
                asks = pool.map(lambda i: self._complete(http, i, prompts[i], model, n, seed), range(len(prompts)))
                answers = list(
                    tqdm(asks, total=len(prompts), desc=f"generate x{n}", unit="prompt", leave=False, disable=None)
                )
        return [row for rows in answers for row in rows]

    def _complete(self, http: httpx.Client, i: int, prompt: dict, model: str, n: int, seed: int) -> list[dict]:
        """Prompt i's samples, from server i mod the number of servers, seeded by the prompt (not by the server)."""
        s = self.sampling
        greedy = s.temperature == 0
        body = {
            "model": model,
            "prompt": self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False).input_ids,
            "n": 1 if greedy else n,  # vLLM refuses n > 1 when greedy; the copies are equal anyway
            "temperature": s.temperature,
            "top_p": 1.0 if greedy else s.top_p,
            "max_tokens": s.max_new_tokens,
            "seed": prompt_seed(seed, prompt["id"]),
            "return_token_ids": True,
        }
        url = self.urls[i % len(self.urls)]
        choices = sorted(
            post(http, f"{url}/completions", body, self.config.max_retries)["choices"], key=lambda c: c["index"]
        )
        eos = self.tokenizer.eos_token_id
        return [
            {
                "prompt_id": prompt["id"],
                "sample": j,
                "response": choice["text"].strip(),
                "n_tokens": sum(1 for t in choice.get("token_ids") or [] if t != eos),
                "finish_reason": "stop" if choice["finish_reason"] == "stop" else "length",
            }
            for j, choice in enumerate(choices * (n if greedy else 1))
        ]

    def _serve_champion(self, http: httpx.Client) -> str:
        """The model name to ask for: the base's, or the champion's adapter once every server has it loaded."""
        if not self.policy.adapters:
            return self.config.model
        name = f"ratchet-{self.policy.key()}"
        adapter = str(served_adapter(self.policy, self.models))
        for url in self.urls:
            try:
                post(
                    http, f"{url}/load_lora_adapter", {"lora_name": name, "lora_path": adapter}, self.config.max_retries
                )
            except RemoteJudgeError as err:
                if "already been loaded" not in str(err):
                    raise RemoteJudgeError(f"{url} did not load the champion's adapter {adapter}: {err}") from err
        return name


def served_adapter(policy: Policy, models: ModelsConfig) -> Path:
    """The champion's adapters as one: the last adapter itself, or the chain stacked beside it (made once)."""
    last = Path(policy.adapters[-1])
    if len(policy.adapters) == 1:
        return last
    target = last.with_name(f"{last.name}.chain-{policy.key()}")
    if not target.exists():
        from peft import PeftModel

        names = [f"a{i}" for i in range(len(policy.adapters))]
        base = load_policy(Policy(policy.base), models)
        model = PeftModel.from_pretrained(base, policy.adapters[0], adapter_name=names[0])
        for name, adapter in zip(names[1:], policy.adapters[1:], strict=True):
            model.load_adapter(adapter, adapter_name=name)
        model.add_weighted_adapter(names, [1.0] * len(names), "chain", combination_type="cat")
        with write_atomically(target) as tmp:
            model.save_pretrained(str(tmp), selected_adapters=["chain"])
            for saved in (tmp / "chain").iterdir():  # PEFT puts a named adapter in a folder of its name
                saved.rename(tmp / saved.name)
            (tmp / "chain").rmdir()
    return target

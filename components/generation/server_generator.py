"""Generate from running vLLM servers (`generation.kind: server`): OpenAI-compatible completions, spread across the
servers' URLs (data parallel), with the champion's adapter loaded into each server at runtime through vLLM's
`/v1/load_lora_adapter`, so a server keeps running from round to round.

A server runs with `--enable-lora`, a `--max-lora-rank` that fits the champion's chain (`generation.max_lora_rank`
says what it is), and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` in its environment (`vllm_server.start(max_lora_rank=...)`
does so here). vLLM serves one adapter per request, so a chain of adapters is served as one: PEFT's `cat`
combination stacks their low-rank factors (rank r1 + r2 + ...), which is exact, because each round's adapter adds to
the weights the earlier ones changed. The adapters of earlier champions are unloaded before the new one is loaded.
The adapter's directory must be readable by the servers (the shared workdir, docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from components import endpoints
from components.config.experiment import ModelsConfig, ServerGenerationConfig
from components.data import write_atomically
from components.generation.generator import Sampling, chat_prompt, prompt_seed
from components.models import Policy, load_policy

ADAPTER_PREFIX = "ratchet-"  # the served names of champions' adapters, which Ratchet loads and unloads


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
        self.servers = [
            endpoints.client(url, config.api_key_env, config.timeout, config.max_retries) for url in config.urls
        ]

    def generate(self, prompts: list[dict], n: int, seed: int) -> list[dict]:
        model = self._serve_champion()
        sample = lambda i: self._complete(i, prompts[i], model, n, seed)  # noqa: E731
        answers = endpoints.each(self.config.max_concurrency, sample, range(len(prompts)), f"generate x{n}", "prompt")
        return [row for rows in answers for row in rows]

    def _complete(self, i: int, prompt: dict, model: str, n: int, seed: int) -> list[dict]:
        """Prompt i's samples, from server i mod the number of servers, seeded by the prompt (not by the server)."""
        s, server = self.sampling, self.servers[i % len(self.servers)]
        greedy = s.temperature == 0
        with endpoints.calling(server, "sampling"):
            completion = server.completions.create(
                model=model,
                prompt=self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False).input_ids,
                n=1 if greedy else n,  # vLLM refuses n > 1 when greedy; the copies are equal anyway
                temperature=s.temperature,
                top_p=1.0 if greedy else s.top_p,
                max_tokens=s.max_new_tokens,
                seed=prompt_seed(seed, prompt["id"]),
                extra_body={"return_token_ids": True},  # vLLM's: the sampled ids, to count the answer's tokens
            )
            choices = sorted(completion.choices, key=lambda c: c.index)
            samples = [(c.text, c.finish_reason, (c.model_extra or {}).get("token_ids") or []) for c in choices]
        eos = self.tokenizer.eos_token_id
        return [
            {
                "prompt_id": prompt["id"],
                "sample": j,
                "response": text.strip(),
                "n_tokens": sum(1 for t in token_ids if t != eos),
                "finish_reason": "stop" if finish == "stop" else "length",
            }
            for j, (text, finish, token_ids) in enumerate(samples * (n if greedy else 1))
        ]

    def _serve_champion(self) -> str:
        """The model name to ask for: the base's, or the champion's adapter once every server has it loaded. The
        adapters of earlier champions are unloaded first, so a server holds one of Ratchet's at a time."""
        if not self.policy.adapters:
            return self.config.model
        name = ADAPTER_PREFIX + self.policy.key()
        adapter = str(served_adapter(self.policy, self.models))
        for server in self.servers:
            with endpoints.calling(server, f"loading the champion's adapter {adapter}"):
                served = {model.id for model in server.models.list()}
                for earlier in sorted(m for m in served if m.startswith(ADAPTER_PREFIX) and m != name):
                    endpoints.post(server, "/unload_lora_adapter", {"lora_name": earlier})
                if name not in served:
                    endpoints.post(server, "/load_lora_adapter", {"lora_name": name, "lora_path": adapter})
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

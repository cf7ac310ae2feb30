import pytest
from transformers import AutoModelForCausalLM

from components.config.experiment import ModelsConfig
from components.models import ModelSpecError, Policy, check_spec, load_policy, resolve_model

CPU = ModelsConfig(device="cpu")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "model 'nope': unknown spec"),
        ("./missing-dir", "no such directory"),
        ("model.gguf", "no such directory"),
    ],
)
def test_bad_specs_get_one_line_errors(spec, message):
    with pytest.raises(ModelSpecError, match=message) as err:
        resolve_model(spec)
    assert "\n" not in str(err.value)


def test_dir_without_config_is_refused(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        check_spec(str(tmp_path))


def test_uncached_hub_id_explains_itself(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelSpecError, match="not in the local Hugging Face cache"):
        resolve_model("someorg/somemodel")


def test_embedded_smollm2_resolves_to_a_cached_safetensors_dir(smol_tokenizer):
    path = resolve_model("smollm2-135m-instruct")
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert smol_tokenizer.chat_template is not None


def test_local_dir_loads(tiny_model_dir):
    model = load_policy(Policy(tiny_model_dir), CPU)
    assert sum(p.numel() for p in model.parameters()) < 10_000_000
    assert not model.training


def test_the_newest_adapter_can_stay_unmerged_with_the_same_outputs(tiny_model_dir, random_adapter, tmp_path):
    """Two random adapters: merge_last=False keeps the second as a PEFT layer over the merged first; same logits."""
    import torch
    from peft import PeftModel

    adapters = tuple(random_adapter(tiny_model_dir, i, tmp_path / f"{i}") for i in (1, 2))
    policy = Policy(tiny_model_dir, adapters)
    merged, served = load_policy(policy, CPU), load_policy(policy, CPU, merge_last=False)
    assert isinstance(served, PeftModel) and not isinstance(merged, PeftModel)
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.inference_mode():
        assert torch.allclose(merged(ids).logits, served(ids).logits, atol=1e-4)
        base = load_policy(Policy(tiny_model_dir), CPU)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-4)  # the adapters do something


def test_a_run_that_loses_the_conversion_race_uses_the_winners_copy(tmp_path, tiny_model_dir, smol_tokenizer):
    """Two runs on a fresh cache both convert; the second rename hits the first's dir and must not fail. (The
    conversion itself runs for real wherever the cache is fresh: the first load of the embedded SmolLM2.)"""
    from components.embedded import save_whole

    winner = tmp_path / "smollm2-135m-instruct"
    winner.mkdir()
    (winner / "config.json").write_text("{}")
    save_whole(AutoModelForCausalLM.from_pretrained(tiny_model_dir), smol_tokenizer, winner)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-135m-instruct"]
    assert sorted(p.name for p in winner.iterdir()) == ["config.json"]


def test_a_failed_conversion_leaves_no_temp_dir(tmp_path, tiny_model_dir, smol_tokenizer):
    from components.embedded import save_whole

    blocker = tmp_path / "smollm2-135m-instruct"
    blocker.mkdir()
    (blocker / "something-else").write_text("not a checkpoint")
    with pytest.raises(OSError):
        save_whole(AutoModelForCausalLM.from_pretrained(tiny_model_dir), smol_tokenizer, blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-135m-instruct"]


def test_a_cached_joined_model_is_checked_again_by_each_process_and_rejoined_if_it_changed(tmp_path, monkeypatch):
    """The Qwen GGUF's path (`components.embedded.joined`) on three small parts: joined and checked once; a copy
    changed in the cache after that is found by the next process's first use and joined again from the parts."""
    import hashlib

    from components import embedded

    parts = []
    for i, text in enumerate((b"alpha-", b"beta-", b"gamma")):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(text)
    whole = b"alpha-beta-gamma"
    size, sha256 = len(whole), hashlib.sha256(whole).hexdigest()
    target = tmp_path / "cache" / "model.gguf"
    monkeypatch.setattr(embedded, "_CHECKED_THIS_PROCESS", set())

    assert embedded.joined(target, lambda: parts, size, sha256).read_bytes() == whole
    target.write_bytes(b"alpha-beta-GAMMA")  # tampered with in the cache
    assert embedded.joined(target, lambda: parts, size, sha256).read_bytes() == b"alpha-beta-GAMMA"  # same process

    monkeypatch.setattr(embedded, "_CHECKED_THIS_PROCESS", set())  # the next process
    assert embedded.joined(target, lambda: parts, size, sha256).read_bytes() == whole
    parts[2].write_bytes(b"delta")  # a part that is not the pinned one is refused, and nothing is published
    target.unlink()
    monkeypatch.setattr(embedded, "_CHECKED_THIS_PROCESS", set())
    with pytest.raises(ModelSpecError, match="not the pinned 16 bytes"):
        embedded.joined(target, lambda: parts, size, sha256)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_conversions_progress_bar_goes_to_the_log_not_the_terminal(capfd):
    """The first run dequantises SmolLM2's GGUF; transformers' reader draws a tqdm bar that no setting turns off.
    (A handler on the module's logger itself: Prefect, once set up in this process, stops `components` records from
    reaching the root logger that caplog listens on.)"""
    import logging

    from tqdm.auto import tqdm

    from components import embedded

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("components.embedded")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with embedded._stderr_to_log():
            for _ in tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...", disable=False):
                pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert "Converting" not in capfd.readouterr().err
    assert any("Converting and de-quantizing GGUF tensors" in r.getMessage() for r in records)

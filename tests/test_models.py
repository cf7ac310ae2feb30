import pytest

from components.models import ModelSpecError, Policy, check_spec, load_policy, resolve_model


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
    model = load_policy(Policy(tiny_model_dir))
    assert sum(p.numel() for p in model.parameters()) < 10_000_000
    assert not model.training

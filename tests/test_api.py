"""generate(): the public contract, and every bad request failing before any model loads."""

from __future__ import annotations

import pytest

import aigc


@pytest.mark.parametrize(
    "call, error, message",
    [
        (dict(prompt=""), aigc.ConfigError, "prompt='' is empty"),
        (dict(prompt=["ok", "  "]), aigc.ConfigError, r"prompt\[1\]='  ' is empty"),
        (dict(prompt=[]), aigc.ConfigError, "empty list"),
        (dict(prompt=42), aigc.ConfigError, "string or a list"),
        (dict(kind="video"), aigc.ConfigError, "kind='video' is not supported; use 'audio', 'image' or 'text'"),
        (dict(backend="gpt5"), aigc.BackendNotFoundError, "backend='gpt5' is not a text backend; use 'gpt2' or 'lm'"),
        (dict(temprature=0.5), aigc.ConfigError, "unknown parameter 'temprature'.*allowed: .*temperature"),
        (dict(temperature=-0.1), aigc.ConfigError, "temperature=-0.1 is out of range"),
        (dict(top_p=0.0), aigc.ConfigError, r"top_p=0.0 is out of range; it must be > 0.0 and <= 1.0"),
        (dict(max_new_tokens="10"), aigc.ConfigError, "max_new_tokens='10' must be of type int"),
        (dict(max_new_tokens=0), aigc.ConfigError, "max_new_tokens=0 is out of range"),
        (dict(stop=[""]), aigc.ConfigError, "non-empty string"),
        (dict(n=0), aigc.ConfigError, "n=0 must be a whole number >= 1"),
        (dict(n=2, seed=[1, 2, 3]), aigc.ConfigError, "seed has 3 values but this request makes 2"),
        (dict(seed=-1), aigc.ConfigError, "seed -1 must be an int between"),
        (dict(seed="7"), aigc.ConfigError, "seed='7' must be an int"),
        (dict(n=2, streamer=print), aigc.ConfigError, "streamer= streams one output"),
        (dict(streamer="yes"), aigc.ConfigError, "streamer='yes' must be callable"),
        (dict(model="./no/such/dir"), aigc.ModelLoadError, "no such file or directory"),
        (dict(model="pack:nope"), aigc.ModelLoadError, "no such pack; known packs: pack:smollm2"),
        (
            dict(model="openai-community/gpt2"),
            aigc.ModelLoadError,
            r"not available offline.*HF_HUB_OFFLINE=1.*hf download openai-community/gpt2",
        ),
        (dict(model="not a/valid/id"), aigc.ModelLoadError, "neither an existing path nor a Hub id"),
    ],
)
def test_bad_requests_fail_before_any_model_loads(manager, call, error, message):
    request = {"kind": "text", "prompt": "A lighthouse"} | call
    with pytest.raises(error, match=message):
        aigc.generate(request.pop("kind"), request.pop("prompt"), manager=manager, **request)
    assert manager.stats()["loads"] == 0


def test_gpt2_backend_defaults_to_the_hub_gpt2(manager):
    with pytest.raises(aigc.ModelLoadError, match="openai-community/gpt2"):
        aigc.generate("text", "Hello", backend="gpt2", manager=manager)


def test_a_directory_that_is_not_a_model_and_a_lone_safetensors_file_are_explained(tmp_path, manager):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(aigc.ModelLoadError, match="no config.json"):
        aigc.generate("text", "Hi", model=str(tmp_path), manager=manager)
    with pytest.raises(aigc.ModelLoadError, match="cannot be a text model; pass a .gguf"):
        aigc.generate("text", "Hi", model=str(tmp_path / "weights.safetensors"), manager=manager)


def test_errors_are_also_the_standard_python_types():
    assert issubclass(aigc.ConfigError, ValueError)
    assert issubclass(aigc.BackendNotFoundError, LookupError)
    assert all(issubclass(e, aigc.AIGCError) for e in (aigc.ModelLoadError, aigc.DeviceError, aigc.GenerationError))


def test_each_asset_records_the_seed_that_reproduces_it_alone(tiny_gpt2, manager):
    assets = aigc.generate("text", "The sea", model=tiny_gpt2, n=3, seed=10, manager=manager, max_new_tokens=6)
    assert [a.seed for a in assets] == [10, 11, 12]
    third = aigc.generate("text", "The sea", model=tiny_gpt2, seed=12, manager=manager, max_new_tokens=6)[0]
    assert third.data == assets[2].data
    asset = assets[0]
    assert (asset.kind, asset.backend, asset.model, asset.prompt) == ("text", "lm", tiny_gpt2, "The sea")
    assert asset.params["max_new_tokens"] == 6 and asset.params["temperature"] == 0.7
    assert "streamer" not in asset.params and "batch_size" not in asset.params
    assert asset.timings["batch_s"] > 0 and asset.version == aigc.__version__


def test_without_a_seed_outputs_differ_but_each_records_its_seed(tiny_gpt2, manager):
    first, second = aigc.generate("text", "The sea", model=tiny_gpt2, n=2, manager=manager, max_new_tokens=8)
    assert first.seed is not None and second.seed == first.seed + 1
    again = aigc.generate("text", "The sea", model=tiny_gpt2, seed=second.seed, manager=manager, max_new_tokens=8)[0]
    assert again.data == second.data


def test_import_aigc_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, aigc; assert 'torch' not in sys.modules, 'torch imported'; print(aigc.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

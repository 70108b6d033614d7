"""The MusicGen generator on a tiny random MusicGen: audio shape, seeds, batching, knob and model checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aigc.errors import ConfigError, ModelLoadError
from aigc.generators.audio.music import MusicGenerator
from aigc.media.audio import Audio
from aigc.runtime.devices import DeviceManager


@pytest.fixture(scope="module")
def music(tiny_musicgen) -> MusicGenerator:
    """One generator (and one loaded model) shared by the tests that only generate."""
    return MusicGenerator(tiny_musicgen, DeviceManager("cpu"), backend="music")


def make(gen: MusicGenerator, prompts, seeds, **knobs):
    return gen.generate(prompts, seeds, **MusicGenerator.check_params({"duration": 0.2, **knobs}))


def test_outputs_are_tidy_audio_at_the_model_rate_and_grow_with_duration(music):
    short = make(music, ["lofi beat", "drums"], [1, 2])
    longer = make(music, ["lofi beat"], [1], duration=0.6)[0]
    for out in [*short, longer]:
        assert isinstance(out.data, Audio) and out.data.sample_rate == 3200 == out.info["sample_rate"]
        assert out.data.samples.dtype == np.float32 and out.data.samples.size > 0
        assert np.abs(out.data.samples).max() <= 1.0
        assert out.info["seconds"] == pytest.approx(out.data.duration, abs=1e-3)
    assert short[0].info["tokens"] == 10 and longer.info["tokens"] == 30  # 50 frames per second
    assert longer.data.samples.size > short[0].data.samples.size


def test_same_seed_same_audio_and_new_seed_new_audio(music):
    first, again, other = (make(music, ["lofi beat"], [seed])[0].data.samples for seed in (7, 7, 8))
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.allclose(first, other)


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_an_output_is_the_same_alone_or_in_a_batch(music, guidance):
    batched = make(music, ["lofi beat", "slow jazz piano drums"], [5, 6], guidance=guidance)
    alone = [
        make(music, [prompt], [seed], guidance=guidance)[0]
        for prompt, seed in [("lofi beat", 5), ("slow jazz piano drums", 6)]
    ]
    for in_batch, single in zip(batched, alone, strict=True):
        assert in_batch.data.samples.shape == single.data.samples.shape
        np.testing.assert_allclose(in_batch.data.samples, single.data.samples, atol=1e-5)


def test_greedy_sampling_matches_transformers_generate(music, tiny_musicgen):
    """Our loop (delay pattern, KV cache, guidance) against stock generate; top_k=1 makes sampling greedy."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from aigc.media.audio import tidy

    ours = make(music, ["lofi beat", "drums"], [0, 1], top_k=1, guidance=3.0)
    model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen).eval()
    inputs = AutoTokenizer.from_pretrained(tiny_musicgen)(["lofi beat", "drums"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        waves = model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=10 + 2 - 1)
    for out, wave in zip(ours, waves, strict=True):
        np.testing.assert_allclose(out.data.samples, tidy(wave.numpy(), 3200).samples, atol=1e-5)


@pytest.mark.parametrize(
    "knobs", [{"duration": 0}, {"duration": 60}, {"guidance": -1}, {"temperature": 0}, {"loudness": 3}]
)
def test_bad_knobs_fail_before_any_load(tiny_musicgen, knobs):
    manager = DeviceManager("cpu")
    MusicGenerator(tiny_musicgen, manager, backend="music")
    with pytest.raises(ConfigError):
        MusicGenerator.check_params(knobs)
    assert manager.stats()["loads"] == 0


def test_a_non_musicgen_directory_is_refused_with_its_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ModelLoadError, match="'gpt2'.*'musicgen'"):
        MusicGenerator(str(tmp_path), DeviceManager("cpu"), backend="music")


def test_a_single_file_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="single file"):
        MusicGenerator(str(weights), DeviceManager("cpu"), backend="music")


def test_a_hub_id_loads_offline_from_the_hub_cache(music, tiny_musicgen):
    from conftest import put_in_hub_cache

    put_in_hub_cache("tiny-org/tiny-musicgen", tiny_musicgen)
    by_id = MusicGenerator("tiny-org/tiny-musicgen", DeviceManager("cpu"), backend="music")
    assert np.array_equal(make(by_id, ["drums"], [3])[0].data.samples, make(music, ["drums"], [3])[0].data.samples)


def test_without_weights_the_default_music_model_says_how_to_get_it():
    import aigc

    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ModelLoadError, match="hf download facebook/musicgen-small"):
        aigc.generate("audio", "lofi beat", backend="music", duration=1.0, manager=manager)
    assert manager.stats()["loads"] == 0


def test_music_through_the_public_api_saves_with_provenance(tiny_musicgen, tmp_path):
    import aigc

    clip = aigc.generate(
        "audio", "lofi beat", backend="music", model=tiny_musicgen, seed=2, duration=0.3, manager=DeviceManager("cpu")
    )[0]
    loaded = aigc.load(clip.save(tmp_path / "beat.flac"))
    assert loaded.params["duration"] == 0.3 and loaded.backend == "music" and loaded.data.sample_rate == 3200

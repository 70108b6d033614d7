"""Saving assets: text + JSON sidecar with everything needed to reproduce it, written atomically."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.storage import unique_path


def test_save_and_load_round_trip(tiny_gpt2, manager, tmp_path):
    asset = aigc.generate("text", "The sea", model=tiny_gpt2, seed=4, manager=manager, max_new_tokens=6)[0]
    path = asset.save(tmp_path / "story.txt", model_path=True)  # the record finds this local model again
    assert path.read_text(encoding="utf-8") == asset.data
    record = json.loads((tmp_path / "story.json").read_text())
    for key in ("prompt", "seed", "model", "backend", "params", "timings", "version", "kind", "info"):
        assert key in record
    assert record["seed"] == 4 and record["params"]["max_new_tokens"] == 6 and record["file"] == "story.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["story.json", "story.txt"]  # no temp files left

    loaded = aigc.load(path)
    assert loaded.data == asset.data and loaded.record() == asset.record()
    again = aigc.generate(
        "text",
        loaded.prompt,
        model=loaded.model,
        backend=loaded.backend,
        seed=loaded.seed,
        manager=manager,
        **loaded.params,
    )[0]
    assert again.data == asset.data  # the sidecar is enough to reproduce the text


def test_bad_paths_are_explained(tmp_path):
    asset = aigc.Asset("text", "hi", "p", 1, "lm", "m")
    with pytest.raises(aigc.ConfigError, match="saves as .txt or .md"):
        asset.save(tmp_path / "x.png")
    with pytest.raises(aigc.ConfigError, match="does not exist"):
        aigc.load(tmp_path / "missing.txt")
    (tmp_path / "orphan.txt").write_text("no sidecar")
    with pytest.raises(aigc.ConfigError, match="orphan.json does not exist"):
        aigc.load(tmp_path / "orphan.txt")


def test_unique_path_never_overwrites(tmp_path):
    first = unique_path(tmp_path, "story", ".txt")
    first.write_text("a")
    second = unique_path(tmp_path, "story", ".txt")
    assert second != first and second.name == "story-1.txt"


@pytest.mark.parametrize("suffix", [".png", ".webp", ".jpg", ".jpeg"])
def test_images_save_in_every_image_format_and_read_back(tiny_dcgan, manager, tmp_path, suffix):
    import numpy as np

    asset = aigc.generate("image", "a face", backend="gan", model=tiny_dcgan, seed=3, manager=manager)[0]
    loaded = aigc.load(asset.save(tmp_path / f"face{suffix}"))
    assert loaded.record() == asset.record()
    difference = np.abs(np.asarray(loaded.data, int) - np.asarray(asset.data, int))
    assert difference.max() == 0 if suffix in (".png", ".webp") else difference.mean() < 8  # JPEG is lossy
    from aigc.media import formats

    in_memory = formats.decode(formats.for_path(tmp_path / f"x{suffix}"), asset.to_bytes(suffix.lstrip(".")))
    assert in_memory.data.size == asset.data.size and in_memory.record["seed"] == 3  # no file needed


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_audio_saves_in_every_audio_format_and_reads_back(tmp_path, suffix):
    import numpy as np

    from aigc.media.audio import Audio

    tone = Audio((0.5 * np.sin(np.arange(11025) * 2 * np.pi * 440 / 22050)).astype(np.float32), 22050)
    asset = aigc.Asset("audio", tone, "a tone", 1, "speech", "m", params={"speed": 1.0})
    loaded = aigc.load(asset.save(tmp_path / f"tone{suffix}"))
    assert loaded.record() == asset.record() and loaded.data.sample_rate == 22050
    assert np.corrcoef(loaded.data.samples[:11025], tone.samples)[0, 1] > 0.99
    assert aigc.Asset("text", "hi", "p", 1, "lm", "m").to_bytes() == b"hi"
    with pytest.raises(aigc.ConfigError, match="cannot be png"):
        asset.to_bytes("png")

"""Saving assets: text + JSON sidecar with everything needed to reproduce it, written atomically."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.assets import unique_path


def test_save_and_load_round_trip(tiny_gpt2, manager, tmp_path):
    asset = aigc.generate("text", "The sea", model=tiny_gpt2, seed=4, manager=manager, max_new_tokens=6)[0]
    path = asset.save(tmp_path / "story.txt")
    assert path.read_text(encoding="utf-8") == asset.data
    record = json.loads((tmp_path / "story.json").read_text())
    for key in ("prompt", "seed", "model", "backend", "params", "timings", "version", "kind", "info"):
        assert key in record
    assert record["seed"] == 4 and record["params"]["max_new_tokens"] == 6 and record["file"] == "story.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["story.json", "story.txt"]  # no temp files left

    loaded = aigc.load(path)
    assert loaded.data == asset.data and loaded.record() == asset.record()
    again = aigc.generate("text", loaded.prompt, model=loaded.model, backend=loaded.backend, seed=loaded.seed,
                          manager=manager, **loaded.params)[0]
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

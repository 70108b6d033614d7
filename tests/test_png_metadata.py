"""Every saved PNG carries its provenance: a JSON record and an A1111-style parameters string."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aigc


def test_png_round_trip_reproduces_the_image(tiny_dcgan, manager, tmp_path):
    asset = aigc.generate(
        "image", "a face", backend="gan", model=tiny_dcgan, seed=9, truncation=0.7, size=48, manager=manager
    )[0]
    path = asset.save(tmp_path / "face.png", model_path=True)  # a record that finds this local model again
    with Image.open(path) as image:
        record = json.loads(image.text["aigc"])
        parameters = image.text["parameters"]
    assert record["prompt"] == "a face" and record["seed"] == 9 and record["params"]["truncation"] == 0.7
    assert record["backend"] == "gan" and record["model"] == tiny_dcgan and record["version"] == aigc.__version__
    assert parameters.splitlines()[0] == "a face"
    assert "Seed: 9, Size: 48x48" in parameters and f"Model: {Path(tiny_dcgan).stem}," in parameters

    loaded = aigc.load(path)
    assert np.array_equal(np.asarray(loaded.data), np.asarray(asset.data))
    assert loaded.record() == asset.record()
    again = aigc.generate(
        "image",
        loaded.prompt,
        backend=loaded.backend,
        model=loaded.model,
        seed=loaded.seed,
        manager=manager,
        **loaded.params,
    )[0]
    assert np.array_equal(np.asarray(again.data), np.asarray(asset.data))
    assert [p.name for p in tmp_path.iterdir()] == ["face.png"]  # atomic: no temp file left


def test_a_shared_image_names_its_model_and_hash_and_never_the_folders_it_came_from(
    tiny_dcgan, tiny_sd, manager, tmp_path, monkeypatch
):
    """A1111 writes `Model hash: <first 10 hex of the file's SHA-256>, Model: <checkpoint name>`; image sites
    match on the hash. A local model's directories stay out of every saved file unless the user asks."""
    import hashlib

    from sd_parsers import ParserManager

    face = aigc.generate("image", "a face", backend="gan", model=tiny_dcgan, seed=1, manager=manager)[0]
    castle = aigc.generate(
        "image", "a castle", backend="diffusion", model=tiny_sd, seed=1, steps=2, width=64, height=64, manager=manager
    )[0]
    short = hashlib.sha256(Path(tiny_dcgan).read_bytes()).hexdigest()[:10]
    for asset, name in ((face, "face"), (castle, "castle")):
        for suffix in (".png", ".webp", ".jpg"):
            raw = asset.save(tmp_path / f"{name}{suffix}").read_bytes()
            for folder in {str(Path(tiny_dcgan).parent), str(Path(tiny_sd).parent)}:
                assert folder.encode() not in raw and folder.encode("utf-16-be") not in raw, (name, suffix)
    with Image.open(tmp_path / "face.png") as image:
        assert f"Model hash: {short}, Model: {Path(tiny_dcgan).stem}," in image.text["parameters"]
        assert json.loads(image.text["aigc"])["model"] == Path(tiny_dcgan).stem
    read = ParserManager().parse(tmp_path / "castle.png")  # a third-party reader of A1111 metadata
    assert read.samplers[0].model.name == Path(tiny_sd).name and read.prompts[0].value == "a castle"
    assert face.model == tiny_dcgan  # in memory the reference stays whole
    monkeypatch.setenv("AIGC_RECORD_MODEL_PATHS", "1")
    with Image.open(face.save(tmp_path / "kept.png")) as image:
        assert json.loads(image.text["aigc"])["model"] == tiny_dcgan
        assert f"Model: {Path(tiny_dcgan).stem}," in image.text["parameters"]  # A1111's text: always the name


def test_unreadable_or_foreign_images_are_explained(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(aigc.ConfigError, match="has no aigc metadata"):
        aigc.load(tmp_path / "plain.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(aigc.ConfigError, match="not a readable PNG"):
        aigc.load(tmp_path / "broken.png")
    with pytest.raises(aigc.ConfigError, match="does not exist"):
        aigc.load(tmp_path / "missing.png")


def test_images_save_as_png_webp_or_jpeg_only(tiny_dcgan, manager, tmp_path):
    asset = aigc.generate("image", "x", backend="gan", model=tiny_dcgan, seed=1, manager=manager)[0]
    with pytest.raises(aigc.ConfigError, match="saves as .png, .webp, .jpg or .jpeg"):
        asset.save(tmp_path / "x.bmp")


def test_contact_sheet_lays_images_in_a_grid(tiny_dcgan, manager):
    from aigc.media.sheets import contact_sheet

    assets = aigc.generate("image", "x", backend="gan", model=tiny_dcgan, n=5, seed=1, manager=manager)
    sheet = contact_sheet([a.data for a in assets], gap=2)
    assert sheet.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2)
    assert np.array_equal(np.asarray(sheet)[2:34, 2:34], np.asarray(assets[0].data))

"""Hires fix on the tiny SD pipeline: the larger image keeps the base pass's composition, seeds hold in a batch, the
record reads as A1111 writes it, and impossible requests fail before any load."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import aigc
from aigc.errors import ConfigError
from aigc.generators.image.diffusion import DiffusionGenerator
from aigc.runtime.devices import DeviceManager


@pytest.fixture(scope="module")
def sd_manager() -> DeviceManager:
    return DeviceManager("cpu")


def run(model, manager, prompts, seeds, **given):
    params = DiffusionGenerator.check_params({"steps": 4, "width": 64, "height": 64, **given})
    return [
        np.asarray(out.data, dtype=np.int16)
        for out in DiffusionGenerator(model, manager).generate(prompts, seeds, **params)
    ]


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_hires_doubles_the_size_and_keeps_the_base_composition(tiny_sd, sd_manager, upscaler):
    (base,) = run(tiny_sd, sd_manager, ["a castle"], [1])
    (other,) = run(tiny_sd, sd_manager, ["a castle"], [2])
    (large,) = run(tiny_sd, sd_manager, ["a castle"], [1], hires=2.0, hires_upscaler=upscaler)
    assert large.shape == (128, 128, 3)
    shrunk = np.asarray(Image.fromarray(large.astype(np.uint8)).resize((64, 64), Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(shrunk - base).mean() < np.abs(other - base).mean()  # the same picture, repainted larger
    plain = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((128, 128), Image.Resampling.LANCZOS))
    assert np.abs(large - plain.astype(np.int16)).mean() > 1  # and repainted, not only resized


def test_a_hires_image_is_the_same_alone_or_in_a_batch(tiny_sd, sd_manager):
    together = run(tiny_sd, sd_manager, ["a castle", "a cat"], [3, 4], hires=1.5)
    (alone,) = run(tiny_sd, sd_manager, ["a cat"], [4], hires=1.5)
    assert together[1].shape == (96, 96, 3)
    assert np.abs(together[1] - alone).max() <= 1


def test_the_record_reads_as_a1111_writes_hires_fix(tiny_sd, sd_manager, tmp_path):
    asset = aigc.generate(
        "image",
        "a castle",
        model=tiny_sd,
        seed=5,
        steps=4,
        width=64,
        height=64,
        hires=2.0,
        hires_steps=3,
        manager=sd_manager,
    )[0]
    with Image.open(asset.save(tmp_path / "castle.png")) as image:
        parameters = image.text["parameters"]
    for setting in ("Hires upscale: 2.0", "Hires steps: 3", "Hires upscaler: Latent", "Denoising strength: 0.5"):
        assert setting in parameters
    assert "Size: 128x128" in parameters


@pytest.mark.parametrize(
    "given, message",
    [
        ({"hires": 1.0}, r"hires=1.0 is out of range; it must be > 1.0"),
        ({"hires": 4.0, "width": 1024, "height": 1024}, r"hires=4 makes the 1024x1024 image 4096x4096"),
        ({"hires": 2.0, "hires_steps": 1, "hires_strength": 0.5}, r"hires_steps=1 with hires_strength=0.5 leaves no"),
        ({"hires": 2.0, "init_image": "PHOTO"}, r"hires is for text-to-image; with init_image"),
    ],
)
def test_impossible_hires_requests_fail_before_any_load(tiny_sd, tmp_path, given, message):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(photo)
    given = {key: str(photo) if value == "PHOTO" else value for key, value in given.items()}
    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError, match=message):
        run(tiny_sd, manager, ["a castle"], [1], **given)
    assert manager.stats()["loads"] == 0


def test_hires_can_upscale_with_an_upscaler_model_through_the_same_manager(tiny_sd, tmp_path):
    from upscalers import compact_state, save

    model = save(compact_state(scale=2), tmp_path / "compact-x2.safetensors")
    manager = DeviceManager("cpu")
    asset = aigc.generate(
        "image",
        "a castle",
        model=tiny_sd,
        seed=1,
        steps=4,
        width=64,
        height=64,
        hires=2.0,
        hires_upscaler=model,
        manager=manager,
    )[0]
    assert asset.data.size == (128, 128)
    assert manager.stats()["loads"] == 2  # the pipeline and the upscaler, side by side in one cache
    with Image.open(asset.save(tmp_path / "castle.png")) as image:
        assert "Hires upscaler: compact-x2" in image.text["parameters"]


def test_an_upscaler_file_that_cannot_upscale_fails_before_any_load(tiny_sd, tmp_path):
    (tmp_path / "notes.safetensors").write_bytes(b"not a tensor file")
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ModelLoadError, match=r"hires_upscaler .*notes.safetensors"):
        run(tiny_sd, manager, ["a castle"], [1], hires=2.0, hires_upscaler=str(tmp_path / "notes.safetensors"))
    with pytest.raises(aigc.ModelLoadError, match=r"hires_upscaler \(not 'latent', 'lanczos', so an upscaler model\)"):
        run(tiny_sd, manager, ["a castle"], [1], hires=2.0, hires_upscaler="esrgan")
    assert manager.stats()["loads"] == 0

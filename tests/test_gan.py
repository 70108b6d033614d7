"""The DCGAN backend: the real face pack end to end, and tiny random generators for the loading rules."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

import aigc
from aigc.runtime.devices import DeviceManager


def pixels(asset) -> np.ndarray:
    return np.asarray(asset.data, dtype=np.int16)


@pytest.fixture(scope="module")
def faces():
    manager = DeviceManager("cpu")
    return manager, aigc.generate("image", "portrait", backend="gan", n=8, seed=1, manager=manager)


@pytest.mark.pack
def test_the_face_pack_is_the_offline_default_and_makes_real_faces(faces):
    manager, assets = faces
    default = aigc.generate("image", "portrait", seed=1, manager=manager)[0]  # no SD weights here -> the GAN
    assert default.backend == "gan" and default.model == "pack:gan-faces"
    assert len(assets) == 8 and all(a.data.size == (64, 64) and a.data.mode == "RGB" for a in assets)
    for asset in assets:
        image = pixels(asset)
        assert 20 < image.mean() < 235 and image.std() > 20  # a picture, not a flat or saturated field
    assert assets[0].info["conditioned_on_prompt"] is False  # honest: the prompt does not steer a DCGAN


@pytest.mark.pack
def test_a_seed_gives_the_same_face_alone_or_in_any_batch(faces):
    manager, assets = faces
    for asset in (assets[0], assets[5]):
        alone = aigc.generate("image", "portrait", backend="gan", seed=asset.seed, manager=manager)[0]
        assert np.array_equal(pixels(alone), pixels(asset))
    small_batches = aigc.generate("image", "portrait", backend="gan", n=8, seed=1, batch_size=3, manager=manager)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(small_batches, assets, strict=True))
    assert not np.array_equal(pixels(assets[0]), pixels(assets[1]))


@pytest.mark.pack
def test_truncation_pulls_faces_toward_the_average(faces):
    manager, _ = faces

    def spread(truncation):
        batch = aigc.generate("image", "p", backend="gan", n=16, seed=50, truncation=truncation, manager=manager)
        return np.stack([pixels(a) for a in batch]).std(axis=0).mean()

    assert spread(0.3) < spread(1.0) * 0.8


@pytest.mark.pack
def test_interpolation_walks_from_one_seed_to_the_other(faces):
    manager, assets = faces
    strip = aigc.interpolate(1, 2, frames=5, manager=manager)
    assert strip.data.size == (64 * 5, 64) and strip.info["frames"] == 5 and strip.info["to_seed"] == 2
    frames = [pixels(strip)[:, i * 64 : (i + 1) * 64] for i in range(5)]
    assert np.array_equal(frames[0], pixels(assets[0])) and np.array_equal(frames[-1], pixels(assets[1]))
    steps = [np.abs(a - b).mean() for a, b in pairwise(frames)]
    assert max(steps) < np.abs(frames[0] - frames[-1]).mean()  # each step is smaller than the whole walk


@pytest.mark.pack
def test_upscale_to_a_requested_size(faces):
    manager, _ = faces
    big = aigc.generate("image", "p", backend="gan", seed=1, size=256, upscale_filter="bicubic", manager=manager)[0]
    assert big.data.size == (256, 256) and big.params["size"] == 256


def test_any_compatible_state_dict_loads_by_path(tiny_dcgan, manager):
    assets = aigc.generate("image", "x", backend="gan", model=tiny_dcgan, n=3, seed=4, manager=manager)
    assert [a.data.size for a in assets] == [(32, 32)] * 3  # output size inferred from the layers
    again = aigc.generate("image", "x", backend="gan", model=tiny_dcgan, seed=5, manager=manager)[0]
    assert np.array_equal(pixels(again), pixels(assets[1]))


def test_safetensors_weights_load_too(tiny_dcgan, manager, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(tiny_dcgan, weights_only=True)["netG_state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "g.safetensors")
    from_st = aigc.generate(
        "image", "x", backend="gan", model=str(tmp_path / "g.safetensors"), seed=4, manager=manager
    )[0]
    from_pth = aigc.generate("image", "x", backend="gan", model=tiny_dcgan, seed=4, manager=manager)[0]
    assert np.array_equal(pixels(from_st), pixels(from_pth))


def test_mismatched_or_foreign_state_dicts_are_explained(tiny_dcgan, manager, tmp_path):
    state = torch.load(tiny_dcgan, weights_only=True)["netG_state_dict"]
    state["main.1.weight"] = torch.ones(7)  # a BatchNorm of the wrong width
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(aigc.ModelLoadError, match="not a compatible DCGAN generator"):
        aigc.generate("image", "x", backend="gan", model=str(tmp_path / "bad.pth"), manager=manager)
    torch.save({"fc.weight": torch.ones(3, 3)}, tmp_path / "classifier.pth")
    with pytest.raises(aigc.ModelLoadError, match="no DCGAN generator here"):
        aigc.generate("image", "x", backend="gan", model=str(tmp_path / "classifier.pth"), manager=manager)
    (tmp_path / "noise.pth").write_bytes(b"not a torch file")
    with pytest.raises(aigc.ModelLoadError, match="cannot read GAN weights"):
        aigc.generate("image", "x", backend="gan", model=str(tmp_path / "noise.pth"), manager=manager)


def test_pickled_code_is_refused(manager, tmp_path):
    """weights_only=True: a checkpoint that needs arbitrary code to unpickle never runs it."""
    torch.save(
        {"netG_state_dict": {"main.0.weight": torch.ones(1)}, "payload": np.random.default_rng(0)},
        tmp_path / "evil.pth",
    )
    with pytest.raises(aigc.ModelLoadError, match="cannot read GAN weights"):
        aigc.generate("image", "x", backend="gan", model=str(tmp_path / "evil.pth"), manager=manager)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(truncation=0), "truncation=0.0 is out of range"),
        (dict(frames=1), "frames=1 is out of range"),
        (
            dict(upscale_filter="box"),
            "upscale_filter='box' is not allowed; use 'nearest', 'bilinear', 'bicubic' or 'lanczos'",
        ),
        (dict(steps=10), "unknown parameter 'steps' for image generation; allowed: .*truncation"),
    ],
)
def test_bad_gan_knobs_fail_before_loading(manager, params, message):
    with pytest.raises(aigc.ConfigError, match=message):
        aigc.generate("image", "x", backend="gan", manager=manager, **params)
    assert manager.stats()["loads"] == 0


def test_a_directory_is_not_a_gan(manager, tmp_path):
    with pytest.raises(aigc.ModelLoadError, match="a GAN is one weights file"):
        aigc.generate("image", "x", backend="gan", model=str(tmp_path), manager=manager)

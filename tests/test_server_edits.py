"""Edits through a real server (a subprocess on a loopback port) with aigc's own Client: a mask and a control image
travel as inline data, a ControlNet by its name in --models, and the result is the one a local call makes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SD_SIZE as SIZE
from PIL import Image
from serving import server

import aigc
from aigc.runtime.devices import DeviceManager


@pytest.fixture(scope="module")
def url(tmp_path_factory, tiny_sd, tiny_controlnet):
    root = tmp_path_factory.mktemp("edits-server")
    models = root / "models"
    models.mkdir()
    (models / "tiny-sd").symlink_to(tiny_sd)
    (models / "tiny-controlnet").symlink_to(tiny_controlnet)
    with server(root / "data", models) as (address, _):
        yield address


def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def door() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def test_an_inpainting_request_keeps_the_unmasked_pixels_and_matches_a_local_call(url, tiny_sd):
    knobs = {"init_image": photo(), "mask": door(), "mask_blur": 0, "steps": 2}
    (remote,) = aigc.Client(url).generate("image", "a red door", model="tiny-sd", seed=9, **knobs)
    keep = np.asarray(door()) == 0
    got = np.asarray(remote.data.convert("RGB"))
    assert np.array_equal(got[keep], np.asarray(photo())[keep])
    (local,) = aigc.generate("image", "a red door", model=tiny_sd, seed=9, manager=DeviceManager("cpu"), **knobs)
    assert np.abs(got.astype(int) - np.asarray(local.data).astype(int)).max() <= 1


def test_a_controlnet_is_named_from_models_and_its_image_travels_inline(url):
    client = aigc.Client(url)
    control = [aigc.Control("tiny-controlnet", photo(), preprocess="canny")]
    (steered,) = client.generate("image", "a house", model="tiny-sd", seed=2, steps=2, control=control)
    assert steered.data.size == (SIZE, SIZE)
    assert steered.params["control"][0]["preprocess"] == "canny"
    with pytest.raises(aigc.ConfigError, match=r"control\[0\]\.model=.*never a path"):
        client.generate("image", "a house", model="tiny-sd", steps=2, control=[{"model": "/etc", "image": photo()}])

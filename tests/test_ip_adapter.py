"""Image prompts through an IP-Adapter on the tiny SD: the image steers, scale 0 does not, several images steer
together, seeds hold in a batch, the plain pipeline is never changed, and bad requests fail before any load."""

from __future__ import annotations

from pathlib import Path

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


def photo(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def run(model, manager, prompts=("a cat",), seeds=(1,), **given):
    params = DiffusionGenerator.check_params({"steps": 2, "width": 64, "height": 64, **given})
    outputs = DiffusionGenerator(model, manager).generate(list(prompts), list(seeds), **params)
    return [np.asarray(out.data, dtype=np.int16) for out in outputs]


def test_an_image_prompt_steers_and_scale_zero_leaves_the_image_alone(tiny_sd, tiny_ip_adapter, sd_manager):
    (plain,) = run(tiny_sd, sd_manager)
    (steered,) = run(tiny_sd, sd_manager, image_prompt=photo(), ip_adapter=tiny_ip_adapter)
    (other,) = run(tiny_sd, sd_manager, image_prompt=photo(1), ip_adapter=tiny_ip_adapter)
    (off,) = run(tiny_sd, sd_manager, image_prompt=photo(), ip_adapter=tiny_ip_adapter, image_prompt_scale=0.0)
    (both,) = run(tiny_sd, sd_manager, image_prompt=[photo(), photo(1)], ip_adapter=tiny_ip_adapter)
    assert np.abs(steered - plain).mean() > 2
    assert not np.array_equal(other, steered) and not np.array_equal(both, steered)
    assert np.abs(off - plain).max() <= 1
    (again,) = run(tiny_sd, sd_manager)  # the cached plain pipeline was not changed by the adapter
    assert np.array_equal(again, plain)


def test_image_prompts_keep_each_seed_in_a_batch_and_the_folder_form_works(tiny_sd, tiny_ip_adapter, sd_manager):
    folder = str(Path(tiny_ip_adapter).parent)
    batch = run(tiny_sd, sd_manager, ["a cat", "a dog"], [1, 2], image_prompt=photo(), ip_adapter=folder)
    (alone,) = run(tiny_sd, sd_manager, ["a dog"], [2], image_prompt=photo(), ip_adapter=tiny_ip_adapter)
    assert np.abs(batch[1] - alone).max() <= 1


def test_the_record_names_the_adapter(tiny_sd, tiny_ip_adapter, tmp_path):
    photo().save(tmp_path / "look.png")
    knobs = {"image_prompt": str(tmp_path / "look.png"), "ip_adapter": tiny_ip_adapter, "steps": 2}
    asset = aigc.generate("image", "a cat", model=tiny_sd, seed=1, manager=DeviceManager("cpu"), **knobs)[0]
    with Image.open(asset.save(tmp_path / "cat.png")) as image:
        assert "IP-Adapter: ip-adapter_tiny, IP-Adapter weight: 0.6" in image.text["parameters"]


@pytest.mark.parametrize(
    "given, message",
    [
        ({"image_prompt": "PHOTO"}, r"image_prompt needs ip_adapter too"),
        ({"ip_adapter": "ADAPTER"}, r"ip_adapter needs image_prompt too"),
        ({"image_prompt": "PHOTO", "ip_adapter": "SD"}, r"is a folder with 0 .safetensors files"),
        ({"image_prompt": "PHOTO", "ip_adapter": "NOTES"}, r"holds no IP-Adapter"),
        ({"image_prompt": [], "ip_adapter": "ADAPTER"}, r"image_prompt is an empty list"),
        (
            {"image_prompt": ["PHOTO"] * 17, "ip_adapter": "ADAPTER"},
            r"the images in image_prompt is 17, over the limit",
        ),
        ({"image_prompt": "TEXT", "ip_adapter": "ADAPTER"}, r"image_prompt=.* is not a readable image"),
        ({"image_prompt": "PHOTO", "ip_adapter": "ADAPTER", "image_prompt_scale": 3}, r"out of range"),
        ({"image_prompt": "PHOTO", "ip_adapter": "ADAPTER", "hires": 2.0}, r"hires is for text-to-image"),
    ],
)
def test_bad_image_prompts_fail_before_any_load(tiny_sd, tiny_ip_adapter, tmp_path, given, message):
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(1)}, tmp_path / "notes.safetensors")
    (tmp_path / "notes.txt").write_text("not an image")
    named = {
        "PHOTO": photo(),
        "ADAPTER": tiny_ip_adapter,
        "SD": tiny_sd,
        "NOTES": str(tmp_path / "notes.safetensors"),
        "TEXT": str(tmp_path / "notes.txt"),
    }

    def value(item):
        if isinstance(item, list):
            return [value(x) for x in item]
        return named.get(item, item) if isinstance(item, str) else item

    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError, match=message) as caught:
        run(tiny_sd, manager, **{key: value(item) for key, item in given.items()})
    assert "\n" not in str(caught.value) and manager.stats()["loads"] == 0

"""ControlNet on the tiny SD pipeline with a tiny ControlNet made from its UNet (zero convolutions randomised):
steering changes the image, scale 0 changes nothing, several steer at once, a wrong base or a bad entry is one
line before any load, and the record says which ControlNet steered."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SD_SIZE as SIZE
from conftest import build_tiny_controlnet
from PIL import Image

import aigc
from aigc.errors import ConfigError
from aigc.generators.image.diffusion import DiffusionGenerator
from aigc.runtime.devices import DeviceManager


@pytest.fixture(scope="module")
def sd_manager() -> DeviceManager:
    return DeviceManager("cpu")


def photo(size=(SIZE, SIZE), seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def run(model, manager, **given):
    params = DiffusionGenerator.check_params({"steps": 2, **given})
    return DiffusionGenerator(model, manager).generate(["a house"], [1], **params)[0]


def pixels(output) -> np.ndarray:
    return np.asarray(output.data, dtype=np.int16)


def test_a_controlnet_steers_the_image_and_scale_zero_is_no_controlnet(tiny_sd, tiny_controlnet, sd_manager):
    plain = run(tiny_sd, sd_manager, width=SIZE, height=SIZE)
    steered = run(tiny_sd, sd_manager, control=[{"model": tiny_controlnet, "image": photo()}])
    off = run(tiny_sd, sd_manager, control=[aigc.Control(tiny_controlnet, photo(), scale=0.0)])
    assert np.abs(pixels(steered) - pixels(plain)).mean() > 2
    assert np.abs(pixels(off) - pixels(plain)).max() <= 1  # the stock ControlNet pipeline vs aigc's own loop
    other_image = run(tiny_sd, sd_manager, control=[{"model": tiny_controlnet, "image": photo(seed=1)}])
    assert not np.array_equal(pixels(other_image), pixels(steered))
    again = run(tiny_sd, sd_manager, control=[{"model": tiny_controlnet, "image": photo()}])
    assert np.array_equal(pixels(again), pixels(steered))


def test_several_controlnets_preprocessors_and_windows_each_count(tiny_sd, tiny_controlnet, sd_manager):
    one = {"model": tiny_controlnet, "image": photo()}
    single = run(tiny_sd, sd_manager, control=[one])
    both = run(tiny_sd, sd_manager, control=[one, {**one, "preprocess": "canny", "scale": 0.7}])
    canny = run(tiny_sd, sd_manager, control=[{**one, "preprocess": "canny"}])
    early = run(tiny_sd, sd_manager, control=[{**one, "end": 0.5}])
    for other in (both, canny, early):
        assert not np.array_equal(pixels(other), pixels(single))
    assert sd_manager.stats()["loads"] <= 2  # the base and one ControlNet, each loaded once for every call


def test_the_first_control_image_sets_the_size_unless_width_and_height_do(tiny_sd, tiny_controlnet, sd_manager):
    wide = photo((100, 64))
    assert run(tiny_sd, sd_manager, control=[{"model": tiny_controlnet, "image": wide}]).data.size == (96, 64)
    given = run(tiny_sd, sd_manager, width=64, height=64, control=[{"model": tiny_controlnet, "image": wide}])
    assert given.data.size == (64, 64)


def test_control_works_with_image_to_image_and_inpainting(tiny_sd, tiny_controlnet, sd_manager):
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    entry = [{"model": tiny_controlnet, "image": photo(seed=2)}]
    img2img = run(tiny_sd, sd_manager, init_image=photo(), control=entry)
    plain = run(tiny_sd, sd_manager, init_image=photo())
    assert not np.array_equal(pixels(img2img), pixels(plain))
    inpainted = run(tiny_sd, sd_manager, init_image=photo(), mask=mask, mask_blur=0, control=entry)
    keep = np.asarray(mask) == 0
    assert np.array_equal(pixels(inpainted)[keep], np.asarray(photo(), dtype=np.int16)[keep])


def test_a_controlnet_for_another_base_is_named_with_the_model_before_any_load(tiny_sd, tmp_path):
    other = build_tiny_controlnet(tmp_path / "sdxl-like", tiny_sd, cross_attention_dim=64)
    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError) as caught:
        run(tiny_sd, manager, control=[{"model": str(other), "image": photo()}])
    message = str(caught.value)
    assert "is a ControlNet for an SD-style UNet of cross-attention width 64" in message
    assert "is an SD-style UNet of cross-attention width 32" in message and "\n" not in message
    assert manager.stats()["loads"] == 0


def test_the_record_and_a1111_text_name_the_controlnet_and_it_regenerates(tiny_sd, tiny_controlnet, tmp_path):
    manager = DeviceManager("cpu")
    control_path = tmp_path / "pose.png"
    photo().save(control_path)
    entry = {"model": tiny_controlnet, "image": str(control_path), "preprocess": "canny", "options": {"low": 50}}
    asset = aigc.generate("image", "a house", model=tiny_sd, seed=3, steps=2, control=[entry], manager=manager)[0]
    saved = asset.save(tmp_path / "house.png", model_path=True)
    with Image.open(saved) as image:
        parameters = image.text["parameters"]
    assert 'ControlNet 0: "Module: canny, Model: tiny-controlnet' in parameters
    assert "Weight: 1, Guidance Start: 0, Guidance End: 1" in parameters
    loaded = aigc.load(saved)
    assert loaded.params["control"][0]["options"] == {"low": 50, "high": 200}
    again = aigc.generate("image", loaded.prompt, model=loaded.model, seed=3, manager=manager, **loaded.params)[0]
    assert np.array_equal(pixels(again), pixels(asset))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("./cn=edges.png", [{"model": "./cn", "image": "edges.png"}]),
        ("./cn=edges.png:0.5", [{"model": "./cn", "image": "edges.png", "scale": 0.5}]),
        ("./cn=C:/pictures/edges.png", [{"model": "./cn", "image": "C:/pictures/edges.png"}]),
        (
            '[{"model": "./cn", "image": "a.png", "preprocess": "canny"}]',
            [{"model": "./cn", "image": "a.png", "preprocess": "canny"}],
        ),
    ],
)
def test_the_command_line_form_reads_as_entries(text, expected):
    assert DiffusionGenerator.params["control"].parse("control", [text]) == expected


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"image": "PHOTO"}, r"control\[0\] needs 'model'"),
        ({"model": "CN"}, r"control\[0\] needs 'image'"),
        ({"model": "CN", "image": "PHOTO", "weight": 1}, r"control\[0\] has no field 'weight'; its fields are model"),
        ({"model": "CN", "image": "PHOTO", "scale": 3}, r"control\[0\].scale=3 must be a number from 0 to 2"),
        ({"model": "CN", "image": "PHOTO", "scale": float("nan")}, r"scale=nan must be a number from 0 to 2"),
        ({"model": "CN", "image": "PHOTO", "start": 0.6, "end": 0.4}, r"start=0.6 must come before end=0.4"),
        ({"model": "CN", "image": "PHOTO", "preprocess": "hed"}, r"preprocess='hed' is not known"),
        ({"model": "CN", "image": "PHOTO", "preprocess": "canny", "options": {"low": 300}}, r"low"),
        ({"model": "CN", "image": "PHOTO", "preprocess": "canny", "options": {"name": 1}}, r"has no option 'name'"),
        ({"model": "CN", "image": "PHOTO", "options": {1: 2}}, r"options must be an object of the preprocessor's"),
        ({"model": "CN", "image": "PHOTO", "preprocess": "depth"}, r"preprocess='depth' needs annotator="),
        ({"model": "CN", "image": "PHOTO", "annotator": "GPT2"}, r"annotator is for preprocess='depth'"),
        (
            {"model": "CN", "image": "PHOTO", "preprocess": "depth", "annotator": "GPT2"},
            r"is GPT2LMHeadModel, not a depth",
        ),
        ({"model": "CN", "image": "no/such.png"}, r"control\[0\].image='no/such.png': no such file"),
        ({"model": "CN", "image": "TEXT"}, r"control\[0\].image=.* is not a readable image"),
        ({"model": "GPT2", "image": "PHOTO"}, r"is a GPT2LMHeadModel, not a ControlNet"),
        ("just text", r"control\[0\] must be \{'model': \.\.\., 'image': \.\.\.\}"),
    ],
)
def test_bad_control_entries_fail_in_one_line_before_any_load(
    tiny_sd, tiny_controlnet, tiny_gpt2, tmp_path, entry, message
):
    (tmp_path / "notes.png").write_text("not an image")
    named = {"PHOTO": photo(), "CN": tiny_controlnet, "GPT2": tiny_gpt2, "TEXT": str(tmp_path / "notes.png")}
    if isinstance(entry, dict):
        entry = {key: named.get(value, value) if isinstance(value, str) else value for key, value in entry.items()}
    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError, match=message) as caught:
        run(tiny_sd, manager, control=[entry])
    assert "\n" not in str(caught.value) and manager.stats()["loads"] == 0


def test_too_many_controlnets_or_a_bad_command_line_form_are_refused(tiny_controlnet):
    with pytest.raises(ConfigError, match=r"the ControlNets in control is 9, over the limit of 8"):
        DiffusionGenerator.check_params({"control": [{"model": tiny_controlnet, "image": photo()}] * 9})
    with pytest.raises(ConfigError, match=r"must be MODEL=IMAGE\[:SCALE\]"):
        DiffusionGenerator.params["control"].parse("control", ["edges.png"])
    with pytest.raises(ConfigError, match=r"not valid JSON"):
        DiffusionGenerator.params["control"].parse("control", ["[{oops"])


def test_the_command_line_takes_repeated_control_flags(tiny_sd, tiny_controlnet, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    command = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"
    photo().save(tmp_path / "room.png")
    out = tmp_path / "out"
    given = [
        "generate",
        "image",
        "a room",
        "--model",
        tiny_sd,
        "--steps",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    controls = [
        "--control",
        f"{tiny_controlnet}={tmp_path / 'room.png'}:0.5",
        "--control",
        f"{tiny_controlnet}={tmp_path / 'room.png'}",
    ]
    result = subprocess.run([command, *given, *controls], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[-1])
    assert [entry["scale"] for entry in record["params"]["control"]] == [0.5, 1.0]
    assert len(list(out.glob("*.png"))) == 1


def test_a_depth_preprocessor_runs_the_named_depth_model_once(tiny_sd, tiny_controlnet, tiny_depth):
    import torch

    from aigc.generators.image import depth_maps

    manager = DeviceManager("cpu")
    entry = {"model": tiny_controlnet, "image": photo(), "preprocess": "depth", "annotator": tiny_depth}
    first = run(tiny_sd, manager, control=[entry])
    again = run(tiny_sd, manager, control=[entry])
    plain = run(tiny_sd, manager, control=[{**entry, "preprocess": "none", "annotator": None}])
    assert np.array_equal(pixels(first), pixels(again)) and not np.array_equal(pixels(first), pixels(plain))
    assert manager.stats()["loads"] == 3  # the pipeline, the ControlNet and the depth model, each once
    annotator = depth_maps.load(tiny_depth, torch.float32)
    made = np.asarray(annotator.map(photo(), (80, 48)))
    assert made.shape == (48, 80, 3) and made.min() == 0 and made.max() == 255  # normalised, white nearest
    assert np.array_equal(made[..., 0], made[..., 1])

"""Inpainting and outpainting on tiny random pipelines (an ordinary 4-channel UNet and a 9-channel inpainting one):
what is kept is kept exactly, what is repainted changes, seeds hold, and bad edits fail before any load."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SD_SIZE as SIZE
from PIL import Image

import aigc
from aigc.errors import ConfigError
from aigc.generators.image import edits
from aigc.generators.image.diffusion import DiffusionGenerator
from aigc.runtime.devices import DeviceManager


@pytest.fixture(scope="module")
def sd_manager() -> DeviceManager:
    return DeviceManager("cpu")


@pytest.fixture(params=["tiny_sd", "tiny_sd_inpainting"])
def model(request) -> str:
    """Both kinds of checkpoint A1111 inpaints with: an ordinary one and an sd-inpainting one."""
    return request.getfixturevalue(request.param)


def picture(size=(SIZE, SIZE), seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def square_mask(size=(SIZE, SIZE), box=(16, 16, 48, 48)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def run(model, manager, prompts, seeds, **given):
    params = DiffusionGenerator.check_params({"steps": 2, **given})
    return DiffusionGenerator(model, manager, backend="diffusion").generate(prompts, seeds, **params)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("area", ["whole", "masked"])
def test_inpainting_keeps_every_pixel_under_black_and_repaints_under_white(model, sd_manager, area):
    init, mask = picture(), square_mask()
    out = run(model, sd_manager, ["a red door"], [1], init_image=init, mask=mask, mask_blur=0, inpaint_area=area)[0]
    keep = np.asarray(mask) == 0
    assert out.data.size == init.size
    assert np.array_equal(pixels(out.data)[keep], pixels(init)[keep])
    assert np.abs(pixels(out.data)[~keep] - pixels(init)[~keep]).mean() > 10


def test_mask_blur_blends_the_edge_and_leaves_far_pixels_alone(tiny_sd, sd_manager):
    init, mask = picture(), square_mask()
    sharp = run(tiny_sd, sd_manager, ["a red door"], [1], init_image=init, mask=mask, mask_blur=0)[0]
    soft = run(tiny_sd, sd_manager, ["a red door"], [1], init_image=init, mask=mask, mask_blur=4)[0]
    near = (slice(12, 16), slice(20, 44))  # a band just outside the square's top edge
    far = (slice(0, 4), slice(0, SIZE))
    assert np.array_equal(pixels(sharp.data)[near], pixels(init)[near])
    assert not np.array_equal(pixels(soft.data)[near], pixels(init)[near])
    assert np.array_equal(pixels(soft.data)[far], pixels(init)[far])


def test_an_edit_is_the_same_alone_or_in_a_batch(tiny_sd_inpainting, sd_manager):
    init, mask = picture(), square_mask()
    batch = run(tiny_sd_inpainting, sd_manager, ["a door", "a door"], [3, 4], init_image=init, mask=mask)
    alone = run(tiny_sd_inpainting, sd_manager, ["a door"], [4], init_image=init, mask=mask)[0]
    assert np.abs(pixels(batch[1].data) - pixels(alone.data)).max() <= 1
    assert not np.array_equal(pixels(batch[0].data), pixels(batch[1].data))


def test_only_masked_generates_the_crop_at_the_requested_size_and_keeps_the_picture_size(tiny_sd, sd_manager):
    init, mask = picture((128, 96)), square_mask((128, 96), (80, 8, 112, 40))
    plan = edits.plan(init, mask, width=64, height=64, outpaint=None, blur=0, area="masked", padding=8)
    assert plan.canvas.size == (64, 64) and plan.box is not None
    left, top, right, bottom = plan.box
    assert left <= 72 and top == 0 and right >= 120 and bottom <= 96  # the mask and 8 px of context, clamped
    out = run(
        tiny_sd, sd_manager, ["a window"], [2], init_image=init, mask=mask, inpaint_area="masked", width=64, height=64
    )[0]
    assert out.data.size == (128, 96)
    keep = np.asarray(mask) == 0
    # mask_blur 4 reaches at most a few pixels past the square; the rest of the picture is the input's
    far = keep & (np.asarray(edits.soften(mask, 4)) == 0)
    assert np.array_equal(pixels(out.data)[far], pixels(init)[far])


@pytest.mark.parametrize("outpaint, size", [(16, (96, 96)), ([0, 8, 32, 0], (96, 72))])
def test_outpainting_grows_the_canvas_and_keeps_the_original(model, sd_manager, outpaint, size):
    init = picture()
    out = run(model, sd_manager, ["a beach"], [5], init_image=init, outpaint=outpaint, mask_blur=0)[0]
    assert out.data.size == size
    sides = (outpaint,) * 4 if isinstance(outpaint, int) else outpaint
    left, top = sides[0], sides[1]
    original = pixels(out.data)[top : top + SIZE, left : left + SIZE]
    assert np.array_equal(original, pixels(init))
    grown = np.ones(pixels(out.data).shape[:2], dtype=bool)
    grown[top : top + SIZE, left : left + SIZE] = False
    assert pixels(out.data)[grown].mean() > 20  # generated, not black


def test_the_outpaint_fill_starts_from_the_borders_colours(sd_manager):
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    canvas, mask = edits.grow(init, None, (0, 0, 64, 0))
    fill = np.asarray(canvas, dtype=np.float32)[:, 64:]
    assert np.abs(fill.mean(axis=(0, 1)) - (200, 40, 40)).max() < 8  # the border's colour, under fixed noise
    assert fill.std() > 5
    assert np.asarray(mask)[:, :64].max() == 0 and np.asarray(mask)[:, 64:].min() == 255


def test_outpainting_with_a_mask_also_repaints_the_masked_part(tiny_sd, sd_manager):
    init, mask = picture(), square_mask()
    canvas, grown = edits.grow(init, mask, (0, 0, 16, 0))
    assert grown.size == (80, 64)
    assert np.asarray(grown)[20, 20] == 255 and np.asarray(grown)[2, 2] == 0 and np.asarray(grown)[2, 70] == 255


def test_an_rgba_masks_alpha_is_not_used(tiny_sd, sd_manager):
    init = picture()
    rgba = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))  # transparent black: OpenAI's "edit here", A1111's "keep"
    rgba.paste((255, 255, 255, 255), (16, 16, 48, 48))
    out = run(tiny_sd, sd_manager, ["a door"], [1], init_image=init, mask=rgba, mask_blur=0)[0]
    keep = np.asarray(square_mask()) == 0
    assert np.array_equal(pixels(out.data)[keep], pixels(init)[keep])


def test_an_inpainting_model_asked_for_text_to_image_says_what_it_needs(tiny_sd_inpainting):
    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError, match=r"is an inpainting model .* pass init_image= and mask="):
        run(tiny_sd_inpainting, manager, ["a castle"], [1], width=SIZE, height=SIZE)
    with pytest.raises(ConfigError, match=r"inpainting model"):
        run(tiny_sd_inpainting, manager, ["a castle"], [1], init_image=picture())
    assert manager.stats()["loads"] == 0


def _bomb(path):
    """A PNG whose header claims 60000 x 60000 pixels: refused from the header, never decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return str(path)


@pytest.mark.parametrize(
    "given, message",
    [
        ({"mask": "SQUARE"}, r"mask edits an image; pass the image to edit as init_image="),
        ({"outpaint": 64}, r"outpaint edits an image; pass the image to edit as init_image="),
        ({"init_image": "PICTURE", "mask": "SMALL"}, r"mask is 32x32 but init_image is 64x64"),
        ({"init_image": "PICTURE", "mask": "BLACK"}, r"mask is black everywhere, so there is nothing to repaint"),
        ({"init_image": "PICTURE", "mask": "TEXT"}, r"mask=.* is not a readable image"),
        ({"init_image": "PICTURE", "mask": "BOMB"}, r"mask=.* is far too large to open"),
        ({"init_image": "PICTURE", "outpaint": 12}, r"outpaint=12 must be a multiple of 8"),
        ({"init_image": "PICTURE", "outpaint": [0, 0, 12, 0]}, r"outpaint's right=12 must be a multiple of 8"),
        ({"init_image": "PICTURE", "outpaint": [8, 8]}, r"four of them \(left, top, right, bottom\)"),
        ({"init_image": "PICTURE", "outpaint": 2048}, r"out of range"),
        ({"init_image": "PICTURE", "outpaint": 1000}, r"grows the 64x64 image to 2064x2064"),
        ({"init_image": "PICTURE", "mask": "SQUARE", "inpaint_area": "only"}, r"inpaint_area='only' is not allowed"),
        ({"init_image": "PICTURE", "mask": "SQUARE", "mask_blur": -1}, r"mask_blur=-1 is out of range"),
    ],
)
def test_bad_edits_fail_in_one_line_before_any_load(tiny_sd, tmp_path, given, message):
    files = {
        "PICTURE": picture(),
        "SQUARE": square_mask(),
        "SMALL": square_mask((32, 32), (0, 0, 8, 8)),
        "BLACK": Image.new("L", (SIZE, SIZE), 100),
    }
    (tmp_path / "notes.png").write_text("not an image")
    paths = {"TEXT": str(tmp_path / "notes.png"), "BOMB": _bomb(tmp_path / "bomb.png")}
    named = {**files, **paths}
    given = {key: named.get(value, value) if isinstance(value, str) else value for key, value in given.items()}
    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError, match=message) as caught:
        run(tiny_sd, manager, ["a castle"], [1], **given)
    assert "\n" not in str(caught.value)
    assert manager.stats()["loads"] == 0


def test_the_a1111_parameters_record_the_edit_and_it_regenerates(tiny_sd, sd_manager, tmp_path):
    init_path, mask_path = tmp_path / "house.png", tmp_path / "door.png"
    picture().save(init_path)
    square_mask().save(mask_path)
    knobs = {"init_image": str(init_path), "mask": str(mask_path), "inpaint_area": "masked", "steps": 2}
    asset = aigc.generate("image", "a red door", model=tiny_sd, seed=4, manager=sd_manager, **knobs)[0]
    path = asset.save(tmp_path / "door-fixed.png", model_path=True)
    with Image.open(path) as image:
        parameters = image.text["parameters"]
    assert "Mask blur: 4" in parameters and "Inpaint area: Only masked" in parameters
    assert "Masked area padding: 32" in parameters and "Denoising strength: 0.8" in parameters
    loaded = aigc.load(path)
    assert loaded.params["mask"] == str(mask_path)
    again = aigc.generate(
        "image", loaded.prompt, model=loaded.model, seed=loaded.seed, manager=sd_manager, **loaded.params
    )
    assert np.array_equal(pixels(again[0].data), pixels(asset.data))
    plain = aigc.generate("image", "a castle", model=tiny_sd, seed=4, steps=2, manager=sd_manager)[0]
    plain_path = plain.save(tmp_path / "plain.png")
    with Image.open(plain_path) as image:
        assert "Mask blur" not in image.text["parameters"]


def test_the_command_line_inpaints_and_outpaints(tiny_sd, tmp_path):
    aigc_command = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"
    init_path, mask_path = tmp_path / "house.png", tmp_path / "door.png"
    picture().save(init_path)
    square_mask().save(mask_path)
    out = tmp_path / "out"
    given = ["--model", tiny_sd, "--init-image", str(init_path), "--steps", "2", "--seed", "3", "--out", str(out)]
    edit = ["--mask", str(mask_path), "--mask-blur", "0", "--outpaint", "0,0,16,0"]
    result = subprocess.run(
        [aigc_command, "generate", "image", "a red door", *given, *edit], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (saved,) = out.glob("*.png")
    with Image.open(saved) as image:
        assert image.size == (80, 64)
        kept = np.asarray(image.convert("RGB"), dtype=np.int16)[:, :SIZE]
    keep = np.asarray(square_mask()) == 0
    assert np.array_equal(kept[keep], pixels(picture())[keep])
    bad = subprocess.run(
        [aigc_command, "generate", "image", "a door", *given, "--outpaint", "a,b"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "outpaint='a,b' must be one whole number or four" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_scorer_picks_and_resamples_edits_as_any_image(tiny_sd, sd_manager):
    init, mask = picture(), square_mask()
    knobs = {"init_image": init, "mask": mask, "mask_blur": 0, "steps": 2}
    best = aigc.generate(
        "image",
        "a red door",
        model=tiny_sd,
        best_of=3,
        min_score=0.99,
        max_attempts=2,
        seed=1,
        manager=sd_manager,
        **knobs,
    )
    assert len(best) == 1 and best[0].score is not None and "relevance" in best[0].scores
    keep = np.asarray(mask) == 0
    assert np.array_equal(pixels(best[0].data)[keep], pixels(init)[keep])  # every candidate kept what the mask keeps

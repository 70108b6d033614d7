"""ControlNet's control images made without weights (aigc/generators/image/control_maps.py): what each map holds,
its size and mode, and the one-line errors raised before any work."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from aigc.errors import ConfigError
from aigc.generators.image import control_maps
from aigc.generators.image.control_maps import PREPROCESSORS, check, make


def _square() -> Image.Image:
    """A white square (16..47 on both axes) on black."""
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill="white")
    return image


def _drawing(background: str = "white") -> Image.Image:
    """A black line, 3 px wide, from (8, 32) to (56, 32): a user's drawing."""
    image = Image.new(
        "RGBA" if background == "transparent" else "RGB",
        (64, 64),
        (0, 0, 0, 0) if background == "transparent" else background,
    )
    ImageDraw.Draw(image).line((8, 32, 56, 32), fill="black", width=3)
    return image


def _photo(seed: int = 0) -> Image.Image:
    """Smooth random colours with detail at every scale, the same for a seed."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).resize((96, 96), Image.BICUBIC)
    fine = rng.integers(-40, 40, (96, 96, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=int) + fine, 0, 255).astype(np.uint8))


def _plane(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    assert image.mode == "RGB" and (pixels == pixels[:, :, :1]).all(), "a map is grey, in 3 equal channels"
    return pixels[:, :, 0]


def test_canny_finds_the_squares_border_and_nothing_in_flat_areas():
    edges = _plane(make("canny", _square()))
    assert set(np.unique(edges)) == {0, 255}, "white edges on black"
    rows, cols = np.nonzero(edges)
    near_border = (np.minimum(abs(rows - 16), abs(rows - 47)) <= 1) | (np.minimum(abs(cols - 16), abs(cols - 47)) <= 1)
    assert near_border.all(), "every edge lies on the square's border"
    assert {*rows} >= set(range(17, 47)) and {*cols} >= set(range(17, 47)), "the whole border is traced"
    assert not edges[20:44, 20:44].any() and not edges[:12].any() and not edges[:, 52:].any(), "flat areas are black"


def test_canny_thresholds_change_the_edge_count():
    """Grey bands with steps of 30, 60 and 120: Canny's gradient across a step of d is 4d (Sobel), so a step is an
    edge when 4d passes high."""
    bands = np.repeat(np.repeat(np.array([0, 30, 90, 210], dtype=np.uint8), 24)[None, :], 64, axis=0)
    image = Image.fromarray(bands).convert("RGB")
    for (low, high), steps in {(20, 60): 3, (100, 200): 2, (200, 250): 1}.items():
        edges = _plane(make("canny", image, low=low, high=high))
        columns = np.nonzero(edges.any(axis=0))[0]
        assert len(columns) == steps and all(
            abs(c - s) <= 1 for c, s in zip(columns, (24, 48, 72)[3 - steps :], strict=True)
        ), (low, high, columns)
        assert (edges[:, columns] == 255).all(), "each step is one whole line"
    assert check("canny") == {"low": 100, "high": 200}, "A1111's defaults"


@pytest.mark.parametrize("name", list(PREPROCESSORS))
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_every_map_is_rgb_at_the_size_asked(name, mode):
    image = _photo().convert(mode)
    assert make(name, image, size=(48, 80)).size == (48, 80)
    own = make(name, image)
    assert own.mode == "RGB" and own.size == image.size


@pytest.mark.parametrize("background", ["white", "transparent"])
def test_scribble_turns_a_black_drawing_into_white_lines_on_black(background):
    lines = _plane(make("scribble", _drawing(background)))
    assert set(np.unique(lines)) == {0, 255}
    assert (lines[31:34, 12:53] == 255).all(), "the stroke is white"
    assert not lines[:24].any() and not lines[41:].any(), "the paper, away from the stroke, is black"


def test_scribble_of_a_photo_is_sparse_lines_and_its_threshold_keeps_more_or_fewer():
    photo = _photo()
    white = [(_plane(make("scribble", photo, threshold=t)) > 0).mean() for t in (4, 16, 48)]
    assert 0 < white[2] < white[1] < white[0] < 0.6, white


@pytest.mark.parametrize("background", ["white", "transparent"])
def test_invert_makes_a_drawing_white_on_black_line_for_line(background):
    drawing = _drawing(background)
    inverted = _plane(make("invert", drawing))
    flat = np.asarray(Image.alpha_composite(Image.new("RGBA", (64, 64), "white"), drawing.convert("RGBA")).convert("L"))
    assert (inverted == 255 - flat).all()
    assert (inverted[31:34, 8:57] == 255).all() and not inverted[:30].any()


def test_none_is_the_image_as_given():
    photo = _photo()
    assert np.array_equal(np.asarray(make("none", photo)), np.asarray(photo))


def test_tile_is_a_blurred_copy():
    photo = _photo()
    original = np.asarray(photo, dtype=float)

    def detail(pixels):
        return np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean()

    blurred = [np.asarray(make("tile", photo, down=down), dtype=float) for down in (2, 4.5)]
    for pixels in blurred:
        assert np.abs(pixels.mean(axis=(0, 1)) - original.mean(axis=(0, 1))).max() < 2, "the same colours"
        assert np.abs(pixels - original).mean() < 40, "the same picture"
    assert detail(blurred[1]) < detail(blurred[0]) < detail(original) / 2, "fewer fine details, fewer as down grows"
    assert np.array_equal(np.asarray(make("tile", photo, down=1)), np.asarray(photo)), "down=1 keeps it sharp"


@pytest.mark.parametrize("name", list(PREPROCESSORS))
def test_same_image_same_map(name):
    photo = _photo(3)
    assert np.array_equal(np.asarray(make(name, photo, size=(80, 72))), np.asarray(make(name, photo, size=(80, 72))))


class _Untouchable:
    """An image that fails if read: an error raised with it came before any work."""

    def __getattr__(self, name):
        raise AssertionError(f"the image was read ({name}) before the request was checked")


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("sobel", {}, "is not known; use 'none', 'canny', 'scribble', 'tile' or 'invert'"),
        ("Canny", {}, "is not known"),
        (None, {}, "is not known"),
        ("canny", {"lo": 50}, "has no option 'lo'; its options are 'low' or 'high'"),
        ("none", {"low": 50}, "it takes no options"),
        ("canny", {"low": -1}, "low=-1 must be a whole number from 0 to 255"),
        ("canny", {"high": 256}, "high=256 must be a whole number from 0 to 255"),
        ("canny", {"low": 1.5}, "must be a whole number"),
        ("canny", {"low": True}, "must be a whole number"),
        ("canny", {"low": "100"}, "must be a whole number"),
        ("canny", {"low": 200, "high": 100}, "low=200 is above high=100; make low at most high"),
        ("canny", {"low": 201}, "low=201 is above high=200"),
        ("scribble", {"threshold": 0}, "threshold=0 must be a whole number from 1 to 255"),
        ("tile", {"down": 0.5}, "down=0.5 must be a number from 1 to 16"),
        ("tile", {"down": float("nan")}, "down=nan must be a number"),
        ("tile", {"down": "x" * 5000}, "must be a number"),
    ],
)
def test_a_bad_name_or_option_is_one_line_raised_before_any_work(name, options, words):
    for call in (lambda: check(name, **options), lambda: make(name, _Untouchable(), size=(64, 64), **options)):
        with pytest.raises(ConfigError) as caught:
            call()
        message = str(caught.value)
        assert words in message and "\n" not in message and len(message) < 200, message
        assert caught.value.field == "control"


@pytest.mark.parametrize("size", [(0, 64), (64,), [64, 64], (64.0, 64), (True, 64), "64x64"])
def test_a_bad_size_is_refused(size):
    with pytest.raises(ConfigError, match="must be \\(width, height\\), whole numbers > 0") as caught:
        make("none", _square(), size=size)
    assert caught.value.field == "control"


def test_every_preprocessor_has_one_line_of_help_that_names_its_options():
    for name, spec in PREPROCESSORS.items():
        usage = spec.usage()
        assert "\n" not in usage and len(usage) < 200, name
        assert all(f"{key}={option.default:g}" in usage for key, option in spec.options.items())
    assert PREPROCESSORS["canny"].usage().endswith("options: low=100 (0-255), high=200 (0-255)")


def test_importing_the_module_leaves_opencv_unloaded():
    """opencv loads with the first map (~0.1 s), not with aigc: `aigc generate --help` imports the image backends."""
    import subprocess
    import sys

    code = f"import sys, {control_maps.__name__}; assert 'cv2' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

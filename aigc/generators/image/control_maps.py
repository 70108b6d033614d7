"""Control images for ControlNet, made without weights: what the user's image becomes before a ControlNet sees it.

A ControlNet follows only maps like those it was trained on, so each map is made the way sd-webui-controlnet's
annotators make it, with the same OpenCV calls (Canny, Gaussian blur, area/cubic resizing). `check` validates a
name and its options before any model loads; `make` does the work. Both refuse with a one-line
ConfigError(field="control"). Pure CPU and deterministic: the same image and options give the same map.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ConfigError, one_of

if TYPE_CHECKING:
    from PIL import Image

Pixels = np.ndarray  # height x width x 3, uint8 RGB
Values = Mapping[str, float]  # a preprocessor's options, checked, defaults filled in


@dataclass(frozen=True)
class Option:
    """A numeric option: its default and the range it must lie in; `whole` options take ints only."""

    default: float
    low: float
    high: float
    whole: bool = True


def _no_rule(values: Values) -> str | None:
    return None


@dataclass(frozen=True)
class Preprocessor:
    """One line of help, the work (on pixels already at the output size), its options, and a rule across them."""

    help: str
    run: Callable[[Pixels, Values], Pixels]
    options: Mapping[str, Option] = field(default_factory=dict)
    rule: Callable[[Values], str | None] = _no_rule

    def usage(self) -> str:
        """The help with each option's default and range: what the CLI and the docs show."""
        given = ", ".join(f"{key}={o.default:g} ({o.low:g}-{o.high:g})" for key, o in self.options.items())
        return f"{self.help}; options: {given}" if given else self.help


def _as_given(pixels: Pixels, values: Values) -> Pixels:
    return pixels


def _invert(pixels: Pixels, values: Values) -> Pixels:
    return 255 - pixels


def _canny(pixels: Pixels, values: Values) -> Pixels:
    """cv2.Canny on the RGB image (the strongest channel's gradient), as the canny annotator calls it."""
    import cv2

    return _three(cv2.Canny(pixels, int(values["low"]), int(values["high"])))


def _scribble(pixels: Pixels, values: Values) -> Pixels:
    """scribble_xdog: white where a pixel is darker than its surroundings (a fine blur minus a coarse one, in the
    channel that differs least) by more than threshold / 2. Computed in floats: the annotator's uint8 arithmetic
    wraps and drops lines whose contrast is 128 to 144."""
    import cv2

    image = pixels.astype(np.float32)
    darker = (cv2.GaussianBlur(image, (0, 0), 5.0) - cv2.GaussianBlur(image, (0, 0), 0.5)).min(axis=2)
    return _three(np.where(2 * darker > values["threshold"], 255, 0).astype(np.uint8))


def _tile(pixels: Pixels, values: Values) -> Pixels:
    """tile_resample, then back up to size: a blurred copy, so the tile model keeps the layout and colours and
    invents the detail."""
    height, width = pixels.shape[:2]
    down = values["down"]
    small = _resize(pixels, (max(1, round(width / down)), max(1, round(height / down))))
    return _resize(small, (width, height))


def _canny_rule(values: Values) -> str | None:
    if values["low"] > values["high"]:
        return f"low={values['low']} is above high={values['high']}; make low at most high."
    return None


# The single owner of the preprocessors' names: the API, the CLI and the docs read them (and their help) here.
PREPROCESSORS: dict[str, Preprocessor] = {
    "none": Preprocessor("the image as given, as RGB: a map made elsewhere", _as_given),
    "canny": Preprocessor(
        "white edges on black for canny models: OpenCV's Canny at A1111's thresholds (lower ones find more edges)",
        _canny,
        {"low": Option(100, 0, 255), "high": Option(200, 0, 255)},
        _canny_rule,
    ),
    "scribble": Preprocessor(
        "white lines on black for scribble models, where a photo or a dark-on-light drawing has dark lines "
        "(XDoG; a lower threshold keeps fainter lines)",
        _scribble,
        {"threshold": Option(32, 1, 255)},
    ),
    "tile": Preprocessor(
        "a blurred copy for tile models: scaled down by `down` and back up (1 keeps it sharp)",
        _tile,
        {"down": Option(2.0, 1.0, 16.0, whole=False)},
    ),
    "invert": Preprocessor(
        "the colours inverted: a black-on-white drawing becomes the white-on-black map that scribble and lineart "
        "models read, line for line",
        _invert,
    ),
}


def check(name: str, /, **options: object) -> dict[str, float]:
    """The preprocessor's options, defaults filled in; refuses an unknown name or option, or a value out of range,
    before any image is read or model loaded (what a request's validation calls)."""
    spec = PREPROCESSORS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(
            f"control preprocess={_shown(name)} is not known; use {one_of(PREPROCESSORS)}.", field="control"
        )
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = f"its options are {one_of(spec.options)}" if spec.options else "it takes no options"
        raise ConfigError(f"control preprocess={name!r} has no option {_shown(unknown[0])}; {takes}.", field="control")
    values = {key: _value(name, key, option, options.get(key, option.default)) for key, option in spec.options.items()}
    problem = spec.rule(values)
    if problem:
        raise ConfigError(f"control preprocess={name!r}: {problem}", field="control")
    return values


def make(name: str, image: Image.Image, /, *, size: tuple[int, int] | None = None, **options: object) -> Image.Image:
    """The control map of `image` as RGB at `size` (width, height: the generation size), else at the image's size.

    The image is stretched to size first, as an init image is, and the map is made there: Canny's one-pixel edges
    and the scribble's lines come out at the size the ControlNet reads, not blurred by a later resize.
    """
    from PIL import Image

    values = check(name, **options)
    target = _size(size, image)
    pixels = _resize(_rgb(image), target)
    return Image.fromarray(np.ascontiguousarray(PREPROCESSORS[name].run(pixels, values)))


def _value(name: str, key: str, option: Option, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (option.whole and not isinstance(value, int))
        or not option.low <= value <= option.high
    ):
        kind = "a whole number" if option.whole else "a number"
        raise ConfigError(
            f"control preprocess={name!r} option {key}={_shown(value)} must be {kind} from {option.low:g} to "
            f"{option.high:g}.",
            field="control",
        )
    return value


def _size(size: object, image: Image.Image) -> tuple[int, int]:
    if 0 in image.size:
        raise ConfigError(
            f"the control image is {image.width}x{image.height} pixels; give one with pixels.", field="control"
        )
    if size is None:
        return image.size
    if not (isinstance(size, tuple) and len(size) == 2 and all(type(side) is int and side > 0 for side in size)):
        raise ConfigError(f"control size={_shown(size)} must be (width, height), whole numbers > 0.", field="control")
    width, height = size
    return width, height


def _rgb(image: Image.Image) -> Pixels:
    """RGB pixels; transparency is laid on white, as the annotators' HWC3 does, so a drawing made on a transparent
    background keeps its lines (a plain convert would turn the background black, often the lines' colour)."""
    from PIL import Image

    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.array(image.convert("RGB"))


def _resize(pixels: Pixels, size: tuple[int, int]) -> Pixels:
    """Area averaging to shrink, cubic to enlarge: the annotators' choice (resize_image_with_pad)."""
    import cv2

    if size == (pixels.shape[1], pixels.shape[0]):
        return pixels
    shrink = size[0] * size[1] < pixels.shape[0] * pixels.shape[1]
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _three(plane: Pixels) -> Pixels:
    return np.repeat(plane[:, :, None], 3, axis=2)


def _shown(value: object) -> str:
    return reprlib.repr(value)  # a user's value, cut short: the message stays one readable line

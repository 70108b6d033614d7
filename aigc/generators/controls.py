"""The `control` knob's value: ControlNets that steer an image, each with its control image and how hard it steers.

One entry is `{"model": REF, "image": IMG, "scale": 1.0, "start": 0.0, "end": 1.0, "preprocess": "none",
"options": {}}` (or `aigc.Control(...)`); a request takes a list of them. This module owns their fields, defaults,
ranges and the text forms a command line or a CSV cell gives (`MODEL=IMAGE[:SCALE]`, or JSON); the image work
is the diffusion backend's (generators/image/control.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import limits
from ..checks import plain_text
from ..errors import ConfigError

FIELDS = ("model", "image", "scale", "start", "end", "preprocess", "options", "annotator")
SCALE_RANGE = (0.0, 2.0)  # A1111's ControlNet weight range
TEXT_FORM = "MODEL=IMAGE[:SCALE]"


@dataclass(frozen=True)
class Control:
    """One ControlNet: `model` (a directory, Hub id or name) steers with `image` (a path or a PIL image), made
    into a control map by `preprocess` ("none", "canny", "scribble", "tile", "invert") with its `options`, at
    `scale` (0 = no effect), from `start` to `end` (fractions of the denoising steps). `preprocess="depth"` runs
    the depth-estimation model named as `annotator`."""

    model: str
    image: Any
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocess: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)
    annotator: str | None = None


def checked(name: str, value: Any, image: Callable[[str, Any], Any]) -> list[dict[str, Any]]:
    """The entries as plain dicts with every field (defaults filled in), or a one-line ConfigError.

    `image(where, value)` checks an image reference (knobs.py's own rule for image knobs)."""
    entries = [value] if isinstance(value, (dict, Control)) else value
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError(f"{name} must be a list of ControlNets ({{'model': ..., 'image': ...}} each).", field=name)
    limits.check("controls", len(entries), f"the ControlNets in {name}", field=name)
    return [_entry(f"{name}[{index}]", entry, image, name) for index, entry in enumerate(entries)]


def _entry(where: str, entry: Any, image: Callable[[str, Any], Any], knob: str) -> dict[str, Any]:
    given = asdict(entry) if isinstance(entry, Control) else entry
    if not isinstance(given, dict):
        raise ConfigError(f"{where} must be {{'model': ..., 'image': ...}}, not {type(entry).__name__}.", field=knob)
    unknown = sorted(set(given) - set(FIELDS), key=str)
    if unknown:
        raise ConfigError(f"{where} has no field {unknown[0]!r}; its fields are {', '.join(FIELDS)}.", field=knob)
    for required in ("model", "image"):
        if given.get(required) is None:
            raise ConfigError(f"{where} needs {required!r} ({_help(required)}).", field=knob)
    model = given["model"]
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{where}.model={model!r} must be a model reference (text).", field=knob)
    plain_text(f"{where}.model", model, field=knob)
    entry = {**asdict(Control(model, None)), **given, "image": image(f"{where}.image", given["image"])}
    for key, (low, high) in (("scale", SCALE_RANGE), ("start", (0.0, 1.0)), ("end", (0.0, 1.0))):
        entry[key] = _number(f"{where}.{key}", entry[key], low, high, knob)
    if entry["start"] >= entry["end"]:
        raise ConfigError(
            f"{where}: start={entry['start']} must come before end={entry['end']} (fractions of the steps).",
            field=knob,
        )
    options = entry["options"]
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise ConfigError(f"{where}.options must be an object of the preprocessor's options.", field=knob)
    _check_preprocess(where, entry, knob)
    return entry


def _check_preprocess(where: str, entry: dict[str, Any], knob: str) -> None:
    """The preprocessor: a weight-free one with its options, or a model-backed one (depth) with its annotator."""
    from .image import control_maps, depth_maps

    names = [*control_maps.PREPROCESSORS, *depth_maps.PREPROCESSORS]
    preprocess, annotator = entry["preprocess"], entry["annotator"]
    if not isinstance(preprocess, str) or preprocess not in names:
        raise ConfigError(f"{where}.preprocess={preprocess!r:.60} is not known; use {', '.join(names)}.", field=knob)
    if preprocess not in depth_maps.PREPROCESSORS:
        if annotator is not None:
            raise ConfigError(
                f"{where}: annotator is for preprocess='depth'; {preprocess!r} needs no model.", field=knob
            )
        entry["options"] = control_maps.check(preprocess, **entry["options"])
        return
    if entry["options"]:
        raise ConfigError(f"{where}: preprocess={preprocess!r} takes no options.", field=knob)
    if not isinstance(annotator, str) or not annotator.strip():
        raise ConfigError(
            f"{where}: preprocess={preprocess!r} needs annotator= (a depth-estimation model, e.g. "
            "Intel/dpt-hybrid-midas).",
            field=knob,
        )
    plain_text(f"{where}.annotator", annotator, field=knob)


def _number(where: str, value: Any, low: float, high: float, knob: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{where}={value!r} must be a number from {low:g} to {high:g}.", field=knob)
    return float(value)


def _help(required: str) -> str:
    return "the ControlNet: a directory, Hub id or model name" if required == "model" else "the control image"


def parse(name: str, text: str) -> Any:
    """A command line's or CSV cell's text: JSON (a list or one entry), or `MODEL=IMAGE[:SCALE]`."""
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{name}: not valid JSON ({error.msg} at {error.pos}).", field=name) from None
    model, equals, rest = text.partition("=")
    if not equals or not model or not rest:
        raise ConfigError(
            f"{name}={text!r:.80} must be {TEXT_FORM} (e.g. ./controlnet-canny=edges.png:0.8).", field=name
        )
    image, colon, scale = rest.rpartition(":")
    if colon and image:
        try:
            return {"model": model, "image": image, "scale": float(scale)}
        except ValueError:
            pass  # the colon belongs to the image's path
    return {"model": model, "image": rest}


def parse_all(name: str, value: Any) -> Any:
    """parse() over a repeated flag's texts (one entry each, or JSON lists), flattened; other values as they are."""
    if isinstance(value, str):
        return parse(name, value)
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        return value
    entries: list[Any] = []
    for text in value:
        parsed = parse(name, text)
        entries.extend(parsed if isinstance(parsed, list) else [parsed])
    return entries


def json_schema(help_text: str) -> dict[str, Any]:
    """The knob as JSON Schema: a list of entries (images as asset ids or data URLs over HTTP)."""
    number = {"type": "number"}
    entry = {
        "type": "object",
        "required": ["model", "image"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "the ControlNet: a model name"},
            "image": {"type": "string", "format": "path", "description": "the control image"},
            "scale": {**number, "minimum": SCALE_RANGE[0], "maximum": SCALE_RANGE[1], "default": 1.0},
            "start": {**number, "minimum": 0.0, "maximum": 1.0, "default": 0.0},
            "end": {**number, "minimum": 0.0, "maximum": 1.0, "default": 1.0},
            "preprocess": {"type": "string", "default": "none"},
            "options": {"type": "object"},
            "annotator": {"type": "string", "description": "preprocess 'depth': a depth-estimation model's name"},
        },
    }
    return {"description": help_text, "type": "array", "items": entry, "minItems": 1}

"""How much one request may ask for: every bound of work or memory is declared here, once, and checked before
any model loads. Each limit can be raised explicitly: `AIGC_LIMIT_<NAME>=value` in the environment, or
`aigc.limits.set(name=value)` (also a context manager) in Python. A backend may declare a tighter default of
its own (the speech backend's prompt length, say); an explicit setting overrides that too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields

from .errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """The defaults; docs/limits.md lists what each one bounds."""

    outputs: int = 1024  # outputs of one generate call (prompts x n), and candidates of one scorer round
    best_of: int = 256  # candidates per prompt
    attempts: int = 16  # rounds of the scorer's re-sampling (max_attempts)
    prompts: int = 4096  # prompts in one generate call
    prompt_chars: int = 100_000  # characters of one prompt (backends may declare less)
    megapixels: int = 512  # pixels of all images one call makes, in millions (~1.5 GB as RGB)
    steps: int = 200  # steps of one workflow
    calls_per_step: int = 1024  # generate calls one workflow step fans out to
    run_assets: int = 10_000  # assets one workflow run makes in all
    batch_assets: int = 100_000  # assets one batch plans
    file_mb: int = 64  # a prompts file, recipe or run record read whole, in MiB
    asset_mb: int = 1024  # a saved asset read back whole (aigc.load, aigc score), in MiB
    page: int = 500  # assets one gallery page lists (GET /v1/assets?limit=)
    zip_assets: int = 1000  # assets one zip download holds (POST /v1/assets/zip)
    # stop strings of one call: each is looked for in every output as it grows. OpenAI allows 4; 64 covers any
    # real list (a few end markers and turn headers) while one request cannot carry millions of them
    stop_strings: int = 64
    stop_chars: int = 1000  # characters of one stop string (a marker or a line; never a document)
    controls: int = 8  # ControlNets steering one image (each is a model in memory and a pass per step)
    input_images: int = 16  # images one image knob takes as a list (image_prompt=[...]), each read whole
    json_depth: int = 64  # how deep a request's JSON body nests (aigc's own need 5; Python's parser stops near 1,000)


# An image aigc reads (an init image, a data URL, a file aigc.load or aigc score opens) is decoded whole, as RGB at
# 4 bytes a pixel: its own megapixels default, below Pillow's decompression-bomb guard (~179 MP refused, ~89 MP
# warned), checked from the image's header before a pixel is decoded. 64 MP holds an 8K frame or a 61 MP photo.
READ_MEGAPIXELS = {"megapixels": 64}


DEFAULTS = Limits()
_overrides: dict[str, int] = {}
_lock = threading.Lock()


def get(name: str, declared: Mapping[str, int] | None = None) -> int:
    """The limit in force: an explicit setting (set() or $AIGC_LIMIT_NAME), else the backend's own, else the default."""
    if name not in _names():
        raise KeyError(f"no limit called {name!r}; limits: {', '.join(_names())}")
    with _lock:
        if name in _overrides:
            return _overrides[name]
    text = os.environ.get(f"AIGC_LIMIT_{name.upper()}")
    if text:
        try:
            return _positive(name, int(text))
        except ValueError:
            raise ConfigError(f"AIGC_LIMIT_{name.upper()}={text!r} must be a whole number > 0.") from None
    if declared and name in declared:
        return declared[name]
    return getattr(DEFAULTS, name)


def check(
    name: str, value: int, what: str, declared: Mapping[str, int] | None = None, field: str | None = None
) -> None:
    """Refuse `value` above the limit, saying what was asked, the limit and how to raise it."""
    limit = get(name, declared)
    if value > limit:
        raise ConfigError(
            f"{what} is {value:,}, over the limit of {limit:,}; ask for less, or raise the limit "
            f"explicitly (AIGC_LIMIT_{name.upper()}={value} or aigc.limits.set({name}={value})).",
            field=field or name,
        )


def check_image(width: int, height: int, what: str, field: str | None = None) -> None:
    """Refuse an image to read over the megapixels limit for images read (READ_MEGAPIXELS), from its header's
    width x height, before its pixels are decoded."""
    check(
        "megapixels",
        -(-width * height // 1_000_000),
        f"the megapixels of {what} ({width}x{height} pixels)",
        READ_MEGAPIXELS,
        field,
    )


@contextmanager
def _restore(previous: dict[str, int]) -> Iterator[None]:
    try:
        yield
    finally:
        with _lock:
            _overrides.clear()
            _overrides.update(previous)


def set(**values: int):  # noqa: A001 - `aigc.limits.set(outputs=5000)` reads best
    """Raise (or lower) limits for this process. Used as `with aigc.limits.set(...):` they apply to the block only."""
    for name, value in values.items():
        if name not in _names():
            raise ConfigError(f"no limit called {name!r}; limits: {', '.join(_names())}.")
        _positive(name, value)
    with _lock:
        previous = dict(_overrides)
        _overrides.update(values)
    return _restore(previous)


def current() -> dict[str, int]:
    """Every limit in force now (for `aigc doctor` and the docs)."""
    return {name: get(name) for name in _names()}


def _names() -> list[str]:
    return [f.name for f in fields(Limits)]


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"limit {name}={value!r} must be a whole number > 0.")
    return value

"""A backend's knobs: each Param is the one owner of its default, type, range, help, how text becomes its
value, how the scorer's loop moves it, and its label in A1111's "parameters" string.

Every front end reads them from here: Python keywords, `aigc generate --<knob>`, YAML recipes, batch-file
columns, the scorer's knob nudges, and (later) the server's JSON Schema. No front end copies a default.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, cast

from .. import limits
from ..checks import plain_text
from ..errors import ConfigError, one_of
from . import controls

TYPES = ("float", "int", "bool", "str", "strings", "image", "path", "sides", "controls", "messages", "callable")
SIDES = ("left", "top", "right", "bottom")
ROLES = ("system", "user", "assistant")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
WEAKNESSES = ("novelty", "relevance", "quality")


@dataclass(frozen=True)
class Nudge:
    """How the scorer's loop moves a knob when the best candidate's weakest part is novelty, relevance or
    quality: add (or, with by="mul", multiply by) that part's amount, then clamp to [low, high]."""

    novelty: float
    relevance: float
    quality: float
    low: float
    high: float
    by: str = "add"

    def move(self, value: float, weakest: str) -> float:
        amount = getattr(self, weakest)
        moved = value * amount if self.by == "mul" else value + amount
        return min(max(moved, self.low), self.high)


@dataclass(frozen=True)
class Param:
    """One backend knob. `None` given for it always means its default, from every front end."""

    default: Any
    help: str
    # one of TYPES; "image" is a path or a PIL image, "path" a file or folder the knob reads (a GAN prior, an
    # adapter), "strings" one string or a list, "sides" pixels per side: one whole number for all four or
    # (left, top, right, bottom), checked against min, max and multiple_of side by side; "controls" ControlNet
    # entries (controls.py)
    type: str = "float"
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    min_exclusive: bool = False
    multiple_of: int | None = None
    record: bool = True  # False for what does not change the output (callbacks, batch size, speed switches)
    nudge: Nudge | None = None
    a1111: str | None = None  # its label in the A1111 "parameters" string other tools read
    words: tuple[str, ...] = ()  # a "path" knob's values that name a built-in choice, not a file ("latent")
    several: bool = False  # an "image" knob that also takes a list of images (at most the input_images limit)
    # "strings": the limits (aigc/limits.py) on how many strings and how many characters each, checked before any
    # string is looked at; the stop knob has its own (stop_strings, stop_chars)
    bounds: tuple[str, str] = ("prompts", "prompt_chars")

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"Param type {self.type!r} is not one of {TYPES}")

    @property
    def reads_files(self) -> bool:
        """Whether its value names something on the file system ("image", "path"): the server never takes such a
        value as a path, only as an asset, inline data or a name in its --models directory."""
        return self.type in ("image", "path", "controls")

    @property
    def on_command_line(self) -> bool:
        """Whether a command-line flag can say it (a callable exists only in Python; a chat is JSON for a server)."""
        return self.type not in ("callable", "messages")

    def check(self, name: str, value: Any) -> Any:
        """The value to use: validated, normalised (float for float, a list for strings), or the default for None."""
        if value is None:
            return self.default
        if self.type == "sides":
            return self._sides(name, value)
        value = self._typed(name, value)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name}={value!r} is not allowed; use {one_of(self.choices)}.", field=name)
        self._check_number(name, value)
        return value

    def _check_number(self, name: str, value: Any, field: str | None = None) -> None:
        self._check_range(name, value, field or name)
        if self.multiple_of and value % self.multiple_of:
            low = value - value % self.multiple_of
            high = low + self.multiple_of
            hint = f"try {low} or {high}" if self.min is None or low >= self.min else f"try {high}"
            raise ConfigError(f"{name}={value} must be a multiple of {self.multiple_of} ({hint}).", field=field or name)

    def _sides(self, name: str, value: Any) -> tuple[int, ...] | None:
        """(left, top, right, bottom) from one whole number or four; all four 0 means none (the default)."""
        whole = isinstance(value, int) and not isinstance(value, bool)
        listed = isinstance(value, (list, tuple)) and len(value) == len(SIDES)
        if not (whole or listed) or (listed and not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ConfigError(
                f"{name}={value!r} must be a whole number of pixels or four of them ({', '.join(SIDES)}).", field=name
            )
        sides = (value,) * len(SIDES) if whole else tuple(value)
        for side, amount in zip(SIDES, sides, strict=True):
            self._check_number(name if whole else f"{name}'s {side}", amount, field=name)
        return sides if any(sides) else self.default

    def _typed(self, name: str, value: Any) -> Any:
        if self.type == "callable":
            if not callable(value):
                raise ConfigError(f"{name}={value!r} must be callable ({self.help}).", field=name)
            return value
        if self.type == "image":
            if self.several and isinstance(value, (list, tuple)):
                return _images(name, value)
            return _image(name, value)
        if self.type == "messages":
            return _messages(name, value)
        if self.type == "controls":
            return controls.checked(name, value, _image)
        if self.type == "path":
            return _path(name, value)
        number = self.type in ("int", "float")
        allowed = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,), "strings": (str, list, tuple)}
        if not isinstance(value, allowed[self.type]) or (number and isinstance(value, bool)):
            raise ConfigError(f"{name}={value!r} must be of type {self.type} ({self.help}).", field=name)
        if self.type == "float":
            value = float(cast(float, value))  # an int or a float: the check above, by self.type
            if not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} must be a finite number ({self.help}).", field=name)
        chars = "prompt_chars"
        if self.type == "strings":
            count, chars = self.bounds
            limits.check(
                count, 1 if isinstance(value, str) else len(value), f"the number of strings in {name}", field=name
            )
            value = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{name}={value!r} must be a non-empty string or a list of them.", field=name)
        for text in value if self.type == "strings" else [value] if self.type == "str" else []:
            limits.check(chars, len(text), f"{name}'s length in characters", field=name)
            plain_text(name, text, field=name)
        return value

    def _check_range(self, name: str, value: Any, field: str) -> None:
        if self.type not in ("int", "float", "sides"):
            return
        low_fails = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
        if low_fails or (self.max is not None and value > self.max):
            raise ConfigError(f"{name}={value!r} is out of range; it must be {self.range_text()}.", field=field)

    def range_text(self) -> str:
        low = "" if self.min is None else (f"> {self.min}" if self.min_exclusive else f">= {self.min}")
        high = "" if self.max is None else f"<= {self.max}"
        return " and ".join(filter(None, [low, high]))

    def parse(self, name: str, text: Any) -> Any:
        """The value a piece of text means (a command-line flag, a CSV cell, `--set k=v`); non-text passes as is.

        An empty string means the default, like None. The result still goes through check().
        """
        if self.type == "controls":
            return controls.parse_all(name, text.strip() if isinstance(text, str) else text) or None
        if not isinstance(text, str):
            return text
        text = text.strip() if self.type not in ("str", "strings") else text
        if text == "":
            return None
        if self.type == "bool":
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ConfigError(f"{name}={text!r} must be true or false.", field=name)
        if self.type in ("int", "float"):
            try:
                return int(text) if self.type == "int" else float(text)
            except ValueError:
                kind = "a whole number" if self.type == "int" else "a number"
                raise ConfigError(f"{name}={text!r} must be {kind} ({self.help}).", field=name) from None
        if self.type == "sides":
            parts = text.strip("[]() ").replace(",", " ").split()
            try:
                numbers = [int(part) for part in parts]
            except ValueError:
                raise ConfigError(
                    f"{name}={text!r} must be one whole number or four ({', '.join(SIDES)}), e.g. 64 or 0,0,128,0.",
                    field=name,
                ) from None
            return numbers[0] if len(numbers) == 1 else numbers
        if self.type == "strings" and text.startswith("["):
            try:
                listed = json.loads(text)  # several strings in one cell: ["\n\n", "THE END"]
            except json.JSONDecodeError:
                return text
            return listed if isinstance(listed, list) else text
        return text

    def json_schema(self) -> dict[str, Any] | None:
        """The knob as JSON Schema (what the server's /v1/backends and the studio's forms read); None for a callable."""
        if self.type == "callable":
            return None
        if self.type == "controls":
            return controls.json_schema(self.help)
        kinds = {
            "float": "number",
            "int": "integer",
            "bool": "boolean",
            "str": "string",
            "image": "string",
            "path": "string",
        }
        schema: dict[str, Any] = {"description": self.help}
        if self.type == "messages":
            schema["type"] = "array"
            schema["items"] = {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"enum": list(ROLES)}, "content": {"type": "string"}},
            }
        elif self.type == "strings":
            schema["type"] = "array"
            schema["items"] = {"type": "string", "minLength": 1}
        elif self.type == "sides":
            side = {"type": "integer", **self._number_schema()}
            four = {"type": "array", "items": side, "minItems": len(SIDES), "maxItems": len(SIDES)}
            return {"description": self.help, "anyOf": [side, four]}
        else:
            schema["type"] = kinds[self.type]
        if self.type == "image":
            schema["format"] = "path"
            if self.several:
                one = {"type": "string", "format": "path"}
                return {"description": self.help, "anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
        if self.words:
            schema["examples"] = list(self.words)
        if self.default is not None and self.default != []:
            schema["default"] = self.default
        schema.update(self._number_schema())
        if self.choices:
            schema["enum"] = list(self.choices)
        return schema

    def _number_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {}
        if self.min is not None:
            schema["exclusiveMinimum" if self.min_exclusive else "minimum"] = self.min
        if self.max is not None:
            schema["maximum"] = self.max
        if self.multiple_of:
            schema["multipleOf"] = self.multiple_of
        return schema

    def describe(self) -> str:
        """Help text with the default and range, for --help and forms."""
        facts = []
        if self.choices:
            facts.append("one of " + ", ".join(map(str, self.choices)))
        elif self.range_text():
            facts.append(self.range_text())
        if self.default is not None and self.default != []:
            facts.append(f"default {self.default}")
        return self.help + (f" [{'; '.join(facts)}]" if facts else "")


def _images(name: str, value: list | tuple) -> list[Any]:
    """Several images for one knob (image prompts): each as _image takes it, within the input_images limit."""
    if not value:
        raise ConfigError(f"{name} is an empty list; pass an image or a list of them.", field=name)
    limits.check("input_images", len(value), f"the images in {name}", field=name)
    return [_image(f"{name}[{index}]", item) for index, item in enumerate(value)]


def _image(name: str, value: Any) -> Any:
    """A PIL image as given, or the path of an existing file (opened and checked later, before any load)."""
    if hasattr(value, "convert") and hasattr(value, "size"):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}={value!r} must be of type str (an image file's path) or a PIL image.", field=name)
    plain_text(name, value, field=name)
    if not os.path.isfile(os.path.expanduser(value)):
        raise ConfigError(f"{name}={value!r}: no such file; pass an image path or a PIL image.", field=name)
    return value


def _path(name: str, value: Any) -> str:
    """A file or folder's path as given (str or PathLike), as text; what it holds is read and checked later, by the
    backend, before any load."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}={value!r} must be a path (str).", field=name)
    plain_text(name, value, field=name)
    if len(value) > 4096:
        raise ConfigError(f"{name} is {len(value):,} characters long; a path is at most 4096.", field=name)
    return value


def _messages(name: str, value: Any) -> list[Any]:
    """A chat so far, a list of {"role": system|user|assistant, "content": text} ending with the user's turn; or
    a list of such chats, one per output (what a server sends when it answers several chats in one batch)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be a non-empty list of {{'role', 'content'}} messages.", field=name)
    if all(isinstance(chat, (list, tuple)) for chat in value):
        limits.check("prompts", len(value), f"the number of chats in {name}", field=name)
        return [_chat(f"{name}[{index}]", chat, name) for index, chat in enumerate(value)]
    return _chat(name, value, name)


def _chat(name: str, value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be a non-empty list of {{'role', 'content'}} messages.", field=field)
    messages = []
    for index, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ConfigError(
                f"{name}[{index}] must be {{'role': one of {', '.join(ROLES)}, 'content': text}}.", field=field
            )
        plain_text(f"{name}[{index}]", message["content"], field=field)
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise ConfigError(f"{name} must end with the user's turn: that is what the model answers.", field=field)
    limits.check(
        "prompt_chars", sum(len(m["content"]) for m in messages), f"{name}'s length in characters", field=field
    )
    return messages


def describe_value(value: Any) -> Any:
    """A knob's value as JSON: in-memory objects (a PIL image given as init_image) become a description."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [describe_value(v) for v in value]
    if isinstance(value, dict):
        return {str(key): describe_value(v) for key, v in value.items()}
    size = getattr(value, "size", None)
    if isinstance(size, tuple):
        return f"<{type(value).__name__} {'x'.join(map(str, size))}>"
    return f"<{type(value).__name__}>"

"""The checks every front end's request goes through (Python, CLI, recipe steps, batch rows): prompts and
whole numbers. Knob values are checked by their Params (generators/knobs.py); sizes by limits.py."""

from __future__ import annotations

from typing import Any, Sequence

from . import limits
from .errors import ConfigError


def prompts(prompt: str | Sequence[str]) -> list[str]:
    """The prompts of a request: a string or a list of non-empty strings, within the limits."""
    listed = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if listed is None:
        raise ConfigError(f"prompt must be a string or a list of strings, not {type(prompt).__name__}.", field="prompt")
    if not listed:
        raise ConfigError("prompt is an empty list; give at least one prompt.", field="prompt")
    limits.check("prompts", len(listed), "the number of prompts in one call", field="prompt")
    for i, text in enumerate(listed):
        where = "prompt" if isinstance(prompt, str) else f"prompt[{i}]"
        if not isinstance(text, str):
            raise ConfigError(f"{where} must be a string, not {type(text).__name__} ({text!r:.40}).", field="prompt")
        if not text.strip():
            raise ConfigError(f"{where}={text!r} is empty; say what to generate.", field="prompt")
        plain_text(where, text)
    return listed


def plain_text(where: str, text: str, field: str = "prompt") -> str:
    """Refuse control characters text never means here (NUL and kin; tabs and newlines are fine)."""
    bad = next((ch for ch in text if (ord(ch) < 32 and ch not in "\t\n\r") or ch == "\x7f"), None)
    if bad is not None:
        raise ConfigError(f"{where} holds the control character {bad!r} at position {text.index(bad)}; remove it.",
                          field=field)
    return text


def whole(name: str, value: Any, least: int = 0) -> int:
    """A whole number >= least (not a bool, not a float that happens to be whole)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{name}={value!r} must be a whole number >= {least}.", field=name)
    return value

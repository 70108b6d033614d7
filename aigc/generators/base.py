"""The Generator base class: declared knobs, load once through the device manager, generate in batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..errors import ConfigError, one_of

if TYPE_CHECKING:
    from ..devices import DeviceManager

_TYPES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,), "strings": (str, list, tuple),
          "callable": ()}


@dataclass(frozen=True)
class Param:
    """One backend knob: its default, type and allowed range, checked before any model loads."""

    default: Any
    help: str
    type: str = "float"  # float | int | bool | str | strings | callable
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    min_exclusive: bool = False
    record: bool = True  # False for things that do not change the output (callbacks, batch size)

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if self.type == "callable":
            if not callable(value):
                raise ConfigError(f"{name}={value!r} must be callable ({self.help}).")
            return value
        ok = isinstance(value, _TYPES[self.type]) and not (self.type in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{name}={value!r} must be of type {self.type} ({self.help}).")
        if self.type == "float":
            value = float(value)
        if self.type == "strings":
            value = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{name}={value!r} must be a non-empty string or a list of them.")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name}={value!r} is not allowed; use {one_of(self.choices)}.")
        low_fails = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
        if low_fails or (self.max is not None and value > self.max):
            low = "" if self.min is None else (f"> {self.min}" if self.min_exclusive else f">= {self.min}")
            high = "" if self.max is None else f"<= {self.max}"
            raise ConfigError(f"{name}={value!r} is out of range; it must be {' and '.join(filter(None, [low, high]))}.")
        return value


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    size = getattr(value, "size", None)
    if isinstance(size, tuple):
        return f"<{type(value).__name__} {'x'.join(map(str, size))}>"
    return f"<{type(value).__name__}>"


@dataclass
class Output:
    """One raw result of a generator, before it becomes an Asset; `info` says how it ended."""

    data: Any
    info: dict[str, Any] = field(default_factory=dict)


class Generator:
    """A backend: turns prompts and seeds into outputs in one batched call.

    Subclasses declare `kind`, `family` (what the cached weights are) and `params`, and implement
    `check_model`, `load` (on the CPU; the manager moves the result to the device) and `generate`.
    A generator knows nothing of scoring, saving, the CLI or batches.
    """

    kind: ClassVar[str] = ""
    family: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, model: str, manager: DeviceManager, *, backend: str = "") -> None:
        self.model = model
        self.manager = manager
        self.backend = backend or self.family
        self.check_model()

    @classmethod
    def check_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Every knob with its value: given ones validated, the rest at their defaults."""
        unknown = sorted(set(given) - set(cls.params))
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r} for {cls.kind} generation; allowed: {', '.join(sorted(cls.params))}."
            )
        return {name: param.check(name, given[name]) if name in given else param.default
                for name, param in cls.params.items()}

    @classmethod
    def recorded(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The knobs worth recording in an Asset (those that change the output), as JSON-ready values.

        An in-memory object (a PIL image passed as init_image) is recorded as a description: pass a file
        path instead when the record must reproduce the output on its own.
        """
        return {name: _describe(value) for name, value in params.items() if cls.params[name].record}

    @property
    def dtype(self):
        return self.manager.dtype

    @property
    def cache_key(self) -> tuple[str, str, str, str]:
        return self.manager.key(self.family, self.model, self.dtype)

    def check_model(self) -> None:
        """Resolve the model reference without loading it; raise ModelLoadError if it cannot work."""

    def load(self) -> Any:
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        raise NotImplementedError

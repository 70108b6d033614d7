"""Asset: one generated output with everything needed to reproduce it, saved and read back through the formats
table (formats.py), atomically."""

from __future__ import annotations

import json
import os
from copy import deepcopy
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NoMetadataError
from ..records import Refinement, Search, WorkflowLink, from_dict, to_dict
from ..runtime.models import public_name
from ..storage import path_arg, read_bytes, write_atomic, write_json
from . import formats

__version__ = "0.1.0"
_TYPED = {"workflow": WorkflowLink, "search": Search, "refinement": Refinement}
MODEL_PATHS_ENV = "AIGC_RECORD_MODEL_PATHS"  # "1": records keep a local model's full path (default: its name)


@dataclass
class Asset:
    """A generated text, image or audio clip with its provenance: prompt, seed, backend, model, params, scores."""

    kind: str
    data: Any
    prompt: str
    seed: int | None
    backend: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    score: float | None = None
    rank: int | None = None  # 1 = best, when chosen among candidates by the scorer
    candidates: int | None = None  # how many candidates it was chosen from
    attempts: int | None = None  # how many generate-and-score rounds the search took
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # the backend's own report (tokens, size, why it stopped)
    a1111: dict[str, Any] = field(default_factory=dict)  # the knobs under A1111's labels, for image metadata
    search: Search | None = None  # how the scorer's loop chose it
    workflow: WorkflowLink | None = None  # its step and parents in a workflow run
    refinement: Refinement | None = None  # the gradient steps that steered it toward the prompt
    version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def record(self, *, model_path: bool | None = None) -> dict[str, Any]:
        """Everything but the data itself, JSON-ready: what a file's tags, a sidecar or a manifest line holds.

        The model is named as others may see it (a local path by its own name: models.public_name), since files
        are shared; `model_path=True` (or AIGC_RECORD_MODEL_PATHS=1) keeps the full reference, for a record that
        must find the model again on this machine."""
        out = {}
        for f in fields(self):
            if f.name != "data":
                value = getattr(self, f.name)
                out[f.name] = to_dict(value) if f.name in _TYPED else deepcopy(value)
        if not _keeps_model_path(model_path):
            out["model"] = public_name(self.model)
        return out

    def to_bytes(self, format: str | None = None, *, model_path: bool | None = None) -> bytes:
        """The asset as the bytes of a file in `format` ("png", "webp", "jpeg", "wav", "ogg"...; default: the
        kind's own), with its record inside where the format holds it. Nothing touches the disk."""
        fmt = formats.by_name(format) if format else formats.default(self.kind)
        self._check_format(fmt)
        return formats.encode(fmt, self.data, self.record(model_path=model_path)).data

    def save(self, path: str | os.PathLike, *, model_path: bool | None = None) -> Path:
        """Write the asset and its provenance; returns the data file's path. Never leaves a half-written file.

        The format follows the suffix (formats.py lists them). The record goes inside the file where the
        format holds it (PNG text chunks, XMP and EXIF, audio tags) and into a JSON sidecar for text and audio,
        or whenever it does not fit the format's limits.
        """
        path = path_arg(path, "path")
        fmt = formats.for_path(path, self.kind)
        record = {**self.record(model_path=model_path), "file": path.name}
        encoded = formats.encode(fmt, self.data, record)
        write_atomic(path, encoded.data)
        if fmt.sidecar or not encoded.embedded:
            write_json(sidecar_path(path), record)
        return path

    def _check_format(self, fmt: formats.Format) -> None:
        if fmt.kind != self.kind:
            raise ConfigError(
                f"a {self.kind} asset cannot be {fmt.name}; use {', '.join(formats.suffixes(self.kind))}."
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Asset:
        """Read a saved asset back: its data, and its record from the sidecar or from inside the file."""
        path = path_arg(path, "path")
        fmt, data = _read(path)
        record = _sidecar_record(path) if sidecar_path(path).is_file() else data.record
        if record is None:
            if fmt.kind == "text":
                raise NoMetadataError(f"cannot load {path}: {sidecar_path(path).name} does not exist.")
            raise NoMetadataError(f"cannot load {path}: it has no aigc metadata (was it made by aigc?).")
        try:
            return cls.from_record(data.data, _checked_record(record, fmt.kind))
        except (TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"cannot load {path}: its aigc record is malformed ({error}).") from None

    @classmethod
    def from_record(cls, data: Any, record: dict[str, Any]) -> Asset:
        """An Asset from its data and a record written by record() (keys it does not know are ignored)."""
        known = {f.name for f in fields(cls) if f.name != "data"}
        values = {k: v for k, v in record.items() if k in known}
        for name, record_type in _TYPED.items():
            values[name] = from_dict(record_type, values.get(name))
        return cls(data=data, **values)


def read_media(path: str | os.PathLike) -> tuple[str, Any]:
    """The kind and data of any text, image or audio file aigc reads, with or without aigc's metadata."""
    fmt, data = _read(path_arg(path, "path"))
    return fmt.kind, data.data


def _read(path: Path) -> tuple[formats.Format, formats.Decoded]:
    fmt = formats.for_path(path)
    if not path.exists():
        raise ConfigError(f"cannot load {path}: it does not exist.")
    return fmt, formats.decode(fmt, read_bytes(path, "asset", "asset_mb"), str(path))


_RECORD_TYPES = {
    "prompt": str,
    "backend": str,
    "model": str,
    "params": dict,
    "scores": dict,
    "timings": dict,
    "info": dict,
    "a1111": dict,
    "version": str,
    "created": str,
}


def _checked_record(record: dict[str, Any], kind: str) -> dict[str, Any]:
    """A record's fields checked against what an Asset holds: a file from elsewhere may hold anything."""
    if record.get("kind", kind) != kind:
        raise ValueError(f"it says kind={record.get('kind')!r}, but the file holds {kind}")
    for name, expected in _RECORD_TYPES.items():
        if name in record and record[name] is not None and not isinstance(record[name], expected):
            raise ValueError(f"{name}={record[name]!r:.40} is not a {expected.__name__}")
    seed = record.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed={seed!r:.40} is not a whole number")
    for name in ("score", "rank", "candidates", "attempts"):
        value = record.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != value
            or value in (float("inf"), float("-inf"))
        ):
            raise ValueError(f"{name}={value!r} is not a finite number")
    missing = [name for name in ("prompt", "backend", "model") if not isinstance(record.get(name), str)]
    if missing:
        raise ValueError(f"it has no {missing[0]}")
    return {**record, "kind": kind}


def a1111_parameters(asset: Asset) -> str:
    """The A1111-style "parameters" text an image asset carries (what web UIs and gallery viewers read)."""
    return formats.a1111_text(asset.record(), asset.data.width, asset.data.height)


def _keeps_model_path(asked: bool | None) -> bool:
    """Whether a record keeps a local model's full path: asked for in the call, else by AIGC_RECORD_MODEL_PATHS."""
    if asked is not None:
        return asked
    return os.environ.get(MODEL_PATHS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def load(path: str | os.PathLike) -> Asset:
    """Read a saved asset back (`aigc.load("story.txt")`, `aigc.load("castle.png")`)."""
    return Asset.from_file(path)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _sidecar_record(path: Path) -> dict[str, Any]:
    sidecar = sidecar_path(path)
    try:
        record = json.loads(read_bytes(sidecar, "sidecar"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ConfigError(f"cannot load {path}: its sidecar {sidecar.name} is not readable JSON ({error}).") from None
    if not isinstance(record, dict):
        raise ConfigError(f"cannot load {path}: its sidecar {sidecar.name} does not hold a record.")
    return record

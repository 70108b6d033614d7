"""Asset: one generated output with everything needed to reproduce it, and saving it to disk atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError

__version__ = "0.1.0"
TEXT_SUFFIXES = (".txt", ".md")


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
    scores: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def record(self) -> dict[str, Any]:
        """Everything but the data itself, JSON-ready: what a sidecar or a manifest line holds."""
        record = asdict(self)
        record.pop("data")
        return record

    def save(self, path: str | os.PathLike) -> Path:
        """Write the asset and its provenance; returns the data file's path. Never leaves a half-written file."""
        path = Path(path)
        if self.kind != "text":
            raise ConfigError(f"saving {self.kind} assets is not supported yet.")
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise ConfigError(f"a text asset saves as {' or '.join(TEXT_SUFFIXES)}, not {path.name!r}.")
        record = {**self.record(), "file": path.name}
        write_atomic(path, self.data.encode("utf-8"))
        write_atomic(sidecar_path(path), (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Asset":
        """Read a saved asset back, with the provenance from its sidecar."""
        path = Path(path)
        sidecar = sidecar_path(path)
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ConfigError(f"cannot load {path}: {error.filename} does not exist.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot load {path}: {error}") from None
        record.pop("file", None)
        known = {name for name in cls.__dataclass_fields__ if name != "data"}
        return cls(data=text, **{k: v for k, v in record.items() if k in known})


def load(path: str | os.PathLike) -> Asset:
    """Read a saved asset back (`aigc.load("story.txt")`)."""
    return Asset.from_file(path)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unique_path(directory: Path, stem: str, suffix: str) -> Path:
    """A path in `directory` that does not exist yet, so saving never overwrites earlier work."""
    candidate = directory / f"{stem}{suffix}"
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{counter}{suffix}"
        counter += 1
    return candidate

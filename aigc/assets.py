"""Asset: one generated output with everything needed to reproduce it, and saving it to disk atomically."""

from __future__ import annotations

import json
import os
import tempfile
from copy import deepcopy
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError

__version__ = "0.1.0"
TEXT_SUFFIXES = (".txt", ".md")
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


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
    attempts: int | None = None  # how many generate-and-score rounds it took
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def record(self) -> dict[str, Any]:
        """Everything but the data itself, JSON-ready: what a sidecar or a manifest line holds."""
        return {f.name: deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "data"}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the asset and its provenance; returns the data file's path. Never leaves a half-written file.

        Text: the text plus a JSON sidecar. Images: a PNG whose text chunks hold the JSON record ("aigc")
        and an A1111-style "parameters" string that web UIs and gallery viewers already read.
        """
        path = Path(path)
        if self.kind == "image":
            return self._save_png(path)
        if self.kind == "audio":
            return self._save_audio(path)
        if self.kind != "text":
            raise ConfigError(f"saving {self.kind} assets is not supported yet.")
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise ConfigError(f"a text asset saves as {' or '.join(TEXT_SUFFIXES)}, not {path.name!r}.")
        record = {**self.record(), "file": path.name}
        write_atomic(path, self.data.encode("utf-8"))
        write_atomic(sidecar_path(path), (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path

    def _save_png(self, path: Path) -> Path:
        import io

        from PIL.PngImagePlugin import PngInfo

        if path.suffix.lower() != ".png":
            raise ConfigError(f"an image asset saves as .png (metadata lives in PNG text chunks), not {path.name!r}.")
        info = PngInfo()
        info.add_itxt("aigc", json.dumps({**self.record(), "file": path.name}, ensure_ascii=False))
        info.add_itxt("parameters", a1111_parameters(self))
        buffer = io.BytesIO()
        self.data.save(buffer, format="PNG", pnginfo=info)
        write_atomic(path, buffer.getvalue())
        return path

    def _save_audio(self, path: Path) -> Path:
        """16-bit WAV or FLAC (what every player reads), the record in the file's tags and in a JSON sidecar."""
        import io

        import soundfile as sf

        fmt = AUDIO_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"an audio asset saves as {' or '.join(AUDIO_FORMATS)}, not {path.name!r}.")
        record = {**self.record(), "file": path.name}
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", self.data.sample_rate, 1, format=fmt, subtype="PCM_16") as handle:
            handle.title = self.prompt[:200]
            handle.software = f"aigc {self.version}"
            handle.comment = json.dumps(record, ensure_ascii=False)
            handle.write(self.data.samples)
        write_atomic(path, buffer.getvalue())
        write_atomic(sidecar_path(path), (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Asset":
        """Read a saved asset back: a PNG with its embedded record, or a text file with its sidecar."""
        path = Path(path)
        if path.suffix.lower() == ".png":
            return cls._from_png(path)
        if path.suffix.lower() in AUDIO_FORMATS:
            return cls._from_audio(path)
        sidecar = sidecar_path(path)
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ConfigError(f"cannot load {path}: {error.filename} does not exist.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot load {path}: {error}") from None
        return cls._from_record(text, record)


    @classmethod
    def _from_png(cls, path: Path) -> "Asset":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.load()
                record = json.loads(image.text["aigc"])
                data = image.convert("RGB")
        except FileNotFoundError:
            raise ConfigError(f"cannot load {path}: it does not exist.") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ConfigError(f"cannot load {path}: not a readable PNG ({error}).") from None
        except (KeyError, json.JSONDecodeError):
            raise ConfigError(f"cannot load {path}: it has no aigc metadata (was it made by aigc?).") from None
        return cls._from_record(data, record)

    @classmethod
    def _from_audio(cls, path: Path) -> "Asset":
        import soundfile as sf

        from .audio import Audio

        if not path.exists():
            raise ConfigError(f"cannot load {path}: it does not exist.")
        try:
            samples, rate = sf.read(path, dtype="float32", always_2d=False)
            with sf.SoundFile(path) as handle:
                tagged = handle.comment
        except (sf.LibsndfileError, RuntimeError) as error:
            raise ConfigError(f"cannot load {path}: not a readable audio file ({error}).") from None
        sidecar = sidecar_path(path)
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8") if sidecar.exists() else tagged)
        except json.JSONDecodeError:
            raise ConfigError(f"cannot load {path}: it has no aigc metadata (was it made by aigc?).") from None
        return cls._from_record(Audio(samples.reshape(-1), int(rate)), record)

    @classmethod
    def _from_record(cls, data: Any, record: dict[str, Any]) -> "Asset":
        known = {name for name in cls.__dataclass_fields__ if name != "data"}
        return cls(data=data, **{k: v for k, v in record.items() if k in known})


def a1111_parameters(asset: Asset) -> str:
    """The 'parameters' text other tools read: prompt, negative prompt, then 'Key: value' pairs.

    Knobs left at their default (None) are filled from what the generator reports it used (`info`).
    """
    params = {**asset.info, **{k: v for k, v in asset.params.items() if v is not None}}
    lines = [asset.prompt]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    pairs = {
        "Steps": params.get("steps"), "Sampler": params.get("scheduler"), "CFG scale": params.get("guidance"),
        "Seed": asset.seed, "Size": f"{asset.data.width}x{asset.data.height}", "Model": asset.model,
        "Denoising strength": params.get("strength") if params.get("init_image") else None,
        "Backend": f"aigc {asset.backend}", "Version": asset.version,
    }
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def load(path: str | os.PathLike) -> Asset:
    """Read a saved asset back (`aigc.load("story.txt")`, `aigc.load("castle.png")`)."""
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

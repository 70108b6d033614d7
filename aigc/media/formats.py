"""File formats for saved assets: one row of FORMATS per format, holding its encoder and decoder.

Pillow and soundfile load only when an image or audio row is used, so importing this module stays light.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, one_of

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from .audio import Audio

DEFAULT_FORMAT = {"text": "txt", "image": "png", "audio": "wav"}

# Measured with Pillow 13.0 and libsndfile 1.2.2 by writing and reading back; each limit keeps a wide margin.
_MiB = 1024 * 1024
_PNG_TEXT_LIMIT = 16 * _MiB  # Pillow refuses to open a PNG with over 64 MiB of text chunks in all.
_WEBP_LIMIT = 16 * _MiB  # RIFF chunks are 32-bit; 16 MiB XMP and EXIF payloads read back intact.
_JPEG_LIMIT = 60_000  # one APP1 segment: Pillow writes at most 65,504 B of XMP and 65,533 B of EXIF.
_WAV_TAG_LIMIT = 2_000  # libsndfile drops INFO strings of 2,046 B+ on read; a ~51 kB one breaks the file.
_FLAC_TAG_LIMIT = 8 * _MiB  # the whole Vorbis comment block must stay under 16 MiB (24-bit length).
_OGG_TAG_LIMIT = 16 * _MiB  # Ogg pages chain: 20 MiB comments still read back.
_VORBIS_MAX_RATE = 200_000  # libvorbisenc crashes the process (segfault) above 200 kHz.
_ID3_LIMIT = 16 * _MiB  # a WAV's `id3 ` chunk: ID3v2.4 sizes are 28-bit (256 MiB); 16 MiB records read back.
# Samples go to libsndfile this many frames per write(): its Vorbis encoder segfaults on one write() of about
# 2.1M samples or more (2,090,000 passed, 2,097,151 crashed; 95 s at 22,050 Hz), killing the process and a
# server with it. Every container writes in these chunks, so no format depends on one call's size.
_WRITE_FRAMES = 65_536

_UNICODE = b"UNICODE\x00"  # EXIF UserComment prefix for UTF-16 text; piexif and A1111 use big-endian UTF-16.
_XMP_NS = "https://aigc.dev/ns/1.0/"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk is always these 12 bytes
# Characters XML 1.0 cannot hold, and lone surrogates UTF-8 cannot encode. In json.dumps output they only occur
# inside strings, where the \uXXXX escape means the same character, so the record survives every container.
_UNSAFE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Encoded:
    """A file's bytes; `embedded` is False when the JSON record did not fit and the caller must write a sidecar."""

    data: bytes
    embedded: bool


@dataclass(frozen=True)
class Decoded:
    """A file's content (str, RGB PIL image or Audio) and its embedded record (None when absent or damaged)."""

    data: str | Image | Audio
    record: dict[str, Any] | None


@dataclass(frozen=True)
class Format:
    """One file format: how assets of `kind` are stored under these suffixes (the first is canonical)."""

    name: str
    kind: str
    suffixes: tuple[str, ...]
    media_type: str
    sidecar: bool  # the caller always writes the JSON record beside the file too
    encoder: Callable[[Any, dict[str, Any]], Encoded] = field(repr=False, compare=False)
    decoder: Callable[[bytes, str], Decoded] = field(repr=False, compare=False)

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


def by_name(name: str) -> Format:
    """The format called `name` ("png"; a suffix such as "jpg" works too)."""
    key = str(name).lower()
    if key in FORMATS:
        return FORMATS[key]
    for fmt in FORMATS.values():
        if "." + key.lstrip(".") in fmt.suffixes:
            return fmt
    raise ConfigError(f"unknown file format {name!r}; aigc knows {_or(FORMATS)}.")


def default(kind: str) -> Format:
    """The format an asset of `kind` saves as when the caller names none."""
    _check_kind(kind)
    return FORMATS[DEFAULT_FORMAT[kind]]


def by_media_type(media_type: str) -> Format:
    """The format of a media type ("image/png"; parameters such as "; charset=utf-8" are ignored): what an HTTP
    answer or a data URL says it holds."""
    key = str(media_type).split(";")[0].strip().lower()
    for fmt in FORMATS.values():
        if fmt.media_type == key:
            return fmt
    raise ConfigError(f"unknown media type {media_type!r}; aigc reads {_or(f.media_type for f in FORMATS.values())}.")


def suffixes(kind: str) -> list[str]:
    """Every suffix an asset of `kind` may be saved under, canonical ones first."""
    _check_kind(kind)
    return [suffix for fmt in FORMATS.values() if fmt.kind == kind for suffix in fmt.suffixes]


def for_path(path: str | Path, kind: str | None = None) -> Format:
    """The format a file name's suffix calls for (case-insensitive), checked against `kind` when given."""
    path = Path(path)
    suffix = path.suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes and kind in (None, fmt.kind):
            return fmt
    if kind is not None:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ConfigError(f"{article} {kind} asset saves as {_or(suffixes(kind))}, not {path.name!r}.")
    known = [suffix for fmt in FORMATS.values() for suffix in fmt.suffixes]
    raise ConfigError(f"cannot load {path}: aigc reads {_or(known)} files.")


def encode(fmt: Format | str, data: Any, record: dict[str, Any]) -> Encoded:
    """The file bytes for `data`, with as much of `record` embedded as the format holds."""
    fmt = fmt if isinstance(fmt, Format) else by_name(fmt)
    if not isinstance(record, dict):
        raise ConfigError(f"an asset record is a dict, not {type(record).__name__}.")
    return fmt.encoder(data, record)


def decode(fmt: Format | str, raw: bytes, name: str = "file") -> Decoded:
    """Read file bytes back; malformed input is a ConfigError "cannot load {name}: ..."."""
    fmt = fmt if isinstance(fmt, Format) else by_name(fmt)
    return fmt.decoder(bytes(raw), name)


def a1111_text(record: dict[str, Any], width: int, height: int) -> str:
    """The A1111 "parameters" text other tools read: prompt, negative prompt, then one line of 'Key: value'."""
    from ..runtime.models import public_name

    settings = dict(record.get("a1111") or {})
    negative = settings.pop("Negative prompt", None)
    model_hash = settings.pop("Model hash", None)
    lines = [str(record.get("prompt") or "")]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    backend = record.get("backend")
    model = record.get("model")  # by its name, as A1111 writes it: never the directories of a local path
    pairs = [
        *settings.items(),
        ("Seed", record.get("seed")),
        ("Size", f"{width}x{height}"),
        ("Model hash", model_hash),
        ("Model", public_name(model) if isinstance(model, str) else None),
        ("Backend", None if backend is None else f"aigc {backend}"),
        ("Version", record.get("version")),
    ]
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs if value is not None))
    return "\n".join(lines)


# --- helpers -------------------------------------------------------------------------------------------------


def _or(values) -> str:
    """'.a, .b or .c': suffixes read better bare."""
    return one_of(values, quote=False)


def _check_kind(kind: str) -> None:
    kinds = sorted({fmt.kind for fmt in FORMATS.values()})
    if kind not in kinds:
        raise ConfigError(f"no file format stores {kind!r} assets; formats exist for {_or(kinds)}.")


def _record_json(record: dict[str, Any]) -> str:
    try:
        text = json.dumps(record, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the asset record is not JSON-ready ({error}).") from None
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _parse_record(text: str | bytes | None) -> dict[str, Any] | None:
    """The record in `text`, or None: files from elsewhere may hold anything there."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except (ValueError, TypeError, RecursionError):  # RecursionError: hostile, deeply nested JSON
        return None
    return record if isinstance(record, dict) else None


def _clip(text: str, limit: int, encoding: str = "utf-8") -> str:
    """`text` in at most `limit` encoded bytes, never cut inside a character (lone surrogates become '?')."""
    data = text.encode(encoding, "replace")
    return data.decode(encoding) if len(data) <= limit else data[:limit].decode(encoding, "ignore")


# --- text ----------------------------------------------------------------------------------------------------


def _encode_text(text: Any, record: dict[str, Any]) -> Encoded:
    if not isinstance(text, str):
        raise ConfigError(f"a text asset holds a str, not {type(text).__name__}.")
    try:
        return Encoded(text.encode("utf-8"), embedded=False)  # plain text has nowhere to put the record
    except UnicodeEncodeError as error:
        raise ConfigError(f"cannot save the text: character {error.start} is not valid Unicode.") from None


def _decode_text(raw: bytes, name: str) -> Decoded:
    try:
        return Decoded(raw.decode("utf-8"), None)
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot load {name}: it is not UTF-8 text (bad byte at offset {error.start}).") from None


# --- images --------------------------------------------------------------------------------------------------


def _image_for(image: Any, modes: tuple[str, ...]) -> Image:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ConfigError(f"an image asset holds a PIL image, not {type(image).__name__}.")
    return image if image.mode in modes else image.convert("RGB")


def _save_image(image: Image, pil: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=pil, **options)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot save the image as {pil} ({error}).") from None
    return buffer.getvalue()


def _open_image(raw: bytes, name: str, pil: str) -> tuple[Image, dict[str, Any], dict[str, str]]:
    """The image as RGB, its info and its PNG text chunks; its size is checked from its header (Image.open reads
    only that) against the megapixels limit before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    from .. import limits

    try:
        with Image.open(io.BytesIO(raw), formats=[pil]) as image:
            limits.check_image(image.width, image.height, name)
            image.load()
            return image.convert("RGB"), dict(image.info), dict(getattr(image, "text", {}))
    except ConfigError:
        raise
    except UnidentifiedImageError:
        raise ConfigError(f"cannot load {name}: not a readable {pil} (it is not {pil} data).") from None
    except Exception as error:  # Pillow's plugins raise OSError, SyntaxError, struct.error... on damaged data
        raise ConfigError(f"cannot load {name}: not a readable {pil} ({error}).") from None


def _encode_png(image: Any, record: dict[str, Any]) -> Encoded:
    from PIL.PngImagePlugin import PngInfo

    image = _image_for(image, ("1", "L", "LA", "P", "RGB", "RGBA"))
    text = _record_json(record)
    embedded = len(text.encode("utf-8")) <= _PNG_TEXT_LIMIT
    info = PngInfo()
    if embedded:
        info.add_itxt("aigc", text)
    info.add_itxt("parameters", _clip(a1111_text(record, *image.size), _PNG_TEXT_LIMIT))
    return Encoded(_save_image(image, "PNG", pnginfo=info), embedded)


def _decode_png(raw: bytes, name: str) -> Decoded:
    if _PNG_END not in raw:  # Pillow reads a PNG cut short after its pixel data without complaint
        raise ConfigError(f"cannot load {name}: not a readable PNG (it is truncated: no IEND chunk).")
    image, _, text = _open_image(raw, name, "PNG")
    return Decoded(image, _parse_record(text.get("aigc")))


def _encode_tagged(image: Any, record: dict[str, Any], *, pil: str, limit: int, **options: Any) -> Encoded:
    """WebP/JPEG: the A1111 text in EXIF UserComment (where A1111 puts it), the record in an XMP packet."""
    image = _image_for(image, ("L", "RGB", "RGBA") if pil == "WEBP" else ("L", "RGB"))
    packet = _xmp_packet(_record_json(record))
    embedded = len(packet) <= limit
    extra = {"xmp": packet} if embedded else {}
    exif = _user_comment_exif(a1111_text(record, *image.size), limit)
    return Encoded(_save_image(image, pil, exif=exif, **extra, **options), embedded)


def _decode_tagged(raw: bytes, name: str, *, pil: str) -> Decoded:
    image, info, _ = _open_image(raw, name, pil)
    return Decoded(image, _record_from_xmp(info.get("xmp")))


def _user_comment_exif(text: str, limit: int) -> bytes:
    """EXIF bytes whose UserComment holds `text` as UTF-16, shortened so the whole block stays within `limit`."""
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif.endian = ">"  # big-endian, matching the UTF-16-BE comment that piexif and A1111 read
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[ExifTags.Base.UserComment] = _UNICODE
    overhead = len(exif.tobytes())  # everything but the comment's text; +2 covers word alignment
    comment = _clip(text, max(limit - overhead - 2, 0), "utf-16-be")
    ifd[ExifTags.Base.UserComment] = _UNICODE + comment.encode("utf-16-be")
    return exif.tobytes()


def _xmp_packet(record_json: str) -> bytes:
    from xml.sax.saxutils import escape

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:aigc="{_XMP_NS}"><aigc:record>{escape(record_json)}</aigc:record>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    ).encode()


def _record_from_xmp(xmp: bytes | str | None) -> dict[str, Any] | None:
    import xml.etree.ElementTree as ElementTree

    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not xmp or b"<!DOCTYPE" in xmp:  # XMP never needs a DTD; one could only serve to expand entities
        return None
    try:
        node = ElementTree.fromstring(xmp).find(f".//{{{_XMP_NS}}}record")
    except (ElementTree.ParseError, ValueError):
        return None
    return None if node is None else _parse_record(node.text)


# --- audio ---------------------------------------------------------------------------------------------------


def _encode_audio(
    audio: Any, record: dict[str, Any], *, container: str, subtype: str, tag_limit: int, max_rate: int | None = None
) -> Encoded:
    """Mono audio with tags: title (the prompt), software, and the record as the comment when it fits."""
    import soundfile as sf

    samples, rate = _checked_samples(audio, container, max_rate)
    comment = _record_json(record)
    embedded = len(comment.encode("utf-8")) <= tag_limit
    buffer = io.BytesIO()
    try:
        with sf.SoundFile(buffer, "w", rate, 1, format=container, subtype=subtype) as handle:
            _set_tag(handle, "title", _title(record))
            _set_tag(handle, "software", _software(record))
            if embedded:
                handle.comment = comment
            for start in range(0, samples.size, _WRITE_FRAMES):
                handle.write(samples[start : start + _WRITE_FRAMES])
    except RuntimeError as error:  # soundfile.LibsndfileError, e.g. a sample rate FLAC cannot store
        raise ConfigError(f"cannot save the audio as {container} ({_sf_reason(error)}).") from None
    return Encoded(buffer.getvalue(), embedded)


def _checked_samples(audio: Any, container: str, max_rate: int | None) -> tuple[np.ndarray, int]:
    """Float32 mono samples in [-1, 1] and the rate, or a ConfigError before libsndfile sees anything it would
    mishandle (out-of-range floats wrap around in 16-bit PCM; libvorbisenc crashes on very high rates)."""
    import numpy as np

    from .audio import Audio

    if not isinstance(audio, Audio):
        raise ConfigError(f"an audio asset holds an Audio, not {type(audio).__name__}.")
    samples = np.asarray(audio.samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        raise ConfigError("an audio asset needs at least one sample.")
    rate = int(audio.sample_rate)
    if rate < 1 or (max_rate is not None and rate > max_rate):
        raise ConfigError(f"{container} stores 1 to {max_rate or 'any'} Hz audio, not {rate} Hz.")
    return np.clip(np.nan_to_num(samples), -1.0, 1.0), rate


def _title(record: dict[str, Any]) -> str:
    """The title tag: the prompt's first 200 characters, as every audio container (and WAV's ID3) holds it."""
    return _tag_text(str(record.get("prompt") or "")[:200])


def _software(record: dict[str, Any]) -> str:
    return _tag_text(f"aigc {record.get('version', '')}")


def _tag_text(value: str) -> str:
    # libsndfile takes C strings (a NUL would end them) and refuses empty ones; 1,000 B is far within every limit.
    return _clip(value.replace("\x00", ""), 1_000)


def _set_tag(handle: Any, tag: str, value: str) -> None:
    if value:
        setattr(handle, tag, value)


def _decode_audio(raw: bytes, name: str, *, containers: tuple[str, ...]) -> Decoded:
    import numpy as np
    import soundfile as sf

    from .audio import Audio

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"cannot load {name}: not a readable audio file ({reason}).")

    if reason := _truncation(raw):
        raise refuse(reason)
    try:
        with sf.SoundFile(io.BytesIO(raw)) as handle:
            container, declared, rate, comment = handle.format, handle.frames, handle.samplerate, handle.comment
            samples = handle.read(dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError) as error:  # soundfile.LibsndfileError and kin
        raise refuse(_sf_reason(error)) from None
    if container not in containers:
        raise refuse(f"it holds {container} audio, not {containers[0]}")
    if len(samples) == 0 or len(samples) < declared:
        raise refuse(f"it holds {len(samples)} of {declared} samples: it is truncated")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    return Decoded(Audio(np.ascontiguousarray(mono, dtype=np.float32), int(rate)), _parse_record(comment))


def _truncation(raw: bytes) -> str | None:
    """Why a WAV or Ogg file is cut short, since libsndfile reads what is left of one without complaint."""
    if raw[:4] == b"RIFF" and len(raw) >= 8:
        size = struct.unpack("<I", raw[4:8])[0] + 8
        return f"it is truncated: {len(raw)} of {size} bytes" if len(raw) < size else None
    if raw[:4] != b"OggS":
        return None
    pos = flags = 0
    while pos + 27 <= len(raw) and raw[pos : pos + 4] == b"OggS":  # walk the pages: 27-byte header, lacing table
        flags, table = raw[pos + 5], raw[pos + 27 : pos + 27 + raw[pos + 26]]
        pos += 27 + raw[pos + 26] + sum(table)
    if pos > len(raw) or not flags & 0x04:  # the last page must be whole and carry the end-of-stream flag
        return "it is truncated: its last Ogg page does not end the stream"
    return None


def _sf_reason(error: Exception) -> str:
    """libsndfile's own words, without soundfile's 'Error opening <_io.BytesIO object at 0x...>: ' prefix."""
    return str(error).removeprefix(getattr(error, "prefix", "")).removeprefix("Error : ").rstrip(".")


# --- WAV: INFO tags for libsndfile and players, an ID3 chunk for mutagen and the tools built on it (wav_tags.py) ---


def _encode_wav(audio: Any, record: dict[str, Any]) -> Encoded:
    """WAV with INFO tags and an ID3v2.4 chunk after the data; ID3 has no ~2 KB limit, so its comment holds the
    whole record even where INFO's cannot."""
    from .wav_tags import with_id3

    encoded = _encode_audio(audio, record, container="WAV", subtype="PCM_16", tag_limit=_WAV_TAG_LIMIT)
    comment = _record_json(record)
    fits = len(comment.encode("utf-8")) <= _ID3_LIMIT
    return Encoded(
        with_id3(encoded.data, _title(record), _software(record), comment if fits else ""), encoded.embedded or fits
    )


def _decode_wav(raw: bytes, name: str) -> Decoded:
    """The record from the INFO comment, else from the ID3 comment (where a record over 2,000 bytes is)."""
    from .wav_tags import id3_comments

    decoded = _decode_audio(raw, name, containers=("WAV", "WAVEX", "RF64"))
    if decoded.record is not None:
        return decoded
    records = (_parse_record(comment) for comment in id3_comments(raw))  # files from elsewhere hold other comments
    return Decoded(decoded.data, next((r for r in records if r is not None), None))


# --- the table: adding a format is one row -------------------------------------------------------------------

FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format("txt", "text", (".txt",), "text/plain", True, _encode_text, _decode_text),
        Format("md", "text", (".md",), "text/markdown", True, _encode_text, _decode_text),
        Format("png", "image", (".png",), "image/png", False, _encode_png, _decode_png),
        Format(
            "webp",
            "image",
            (".webp",),
            "image/webp",
            False,  # lossless: pixels come back exactly
            partial(_encode_tagged, pil="WEBP", limit=_WEBP_LIMIT, lossless=True),
            partial(_decode_tagged, pil="WEBP"),
        ),
        Format(
            "jpeg",
            "image",
            (".jpg", ".jpeg"),
            "image/jpeg",
            False,  # lossy: pixels come back close, not exact
            partial(_encode_tagged, pil="JPEG", limit=_JPEG_LIMIT, quality=95),
            partial(_decode_tagged, pil="JPEG"),
        ),
        Format("wav", "audio", (".wav",), "audio/wav", True, _encode_wav, _decode_wav),  # INFO and ID3 tags
        Format(
            "flac",
            "audio",
            (".flac",),
            "audio/flac",
            True,
            partial(_encode_audio, container="FLAC", subtype="PCM_16", tag_limit=_FLAC_TAG_LIMIT),
            partial(_decode_audio, containers=("FLAC",)),
        ),
        Format(
            "ogg",
            "audio",
            (".ogg",),
            "audio/ogg",
            True,  # Ogg Vorbis: lossy
            partial(
                _encode_audio, container="OGG", subtype="VORBIS", tag_limit=_OGG_TAG_LIMIT, max_rate=_VORBIS_MAX_RATE
            ),
            partial(_decode_audio, containers=("OGG",)),
        ),
    )
}

"""The tags of a WAV file that readers other than libsndfile look for: an ID3v2.4 tag in an `id3 ` RIFF chunk.

mutagen and the tools built on it read a WAV's title and comment from ID3, libsndfile and most players from
LIST/INFO, so aigc writes both (formats.py writes INFO through soundfile). Written here, not with mutagen, which
is GPL-2.0 (the tests read the files back with it). Damaged tags read as no tags, never an error.
"""

from __future__ import annotations

import struct


def with_id3(riff: bytes, title: str, software: str, comment: str) -> bytes:
    """A WAV file's bytes with an ID3v2.4 chunk appended: TIT2 the title, TSSE the software, COMM the comment."""
    return _with_riff_chunk(riff, b"id3 ", _id3_tag(title, software, comment))


def id3_comments(raw: bytes) -> list[str]:
    """The COMM texts of a WAV file's ID3 chunk (`id3 ` or `ID3 `), in order; none when it has no readable one."""
    frames = _id3_frames(_riff_chunk(raw, (b"id3 ", b"ID3 ")) or b"")
    return [text for frame_id, body in frames if frame_id == b"COMM" and (text := _id3_comment(body)) is not None]


def _with_riff_chunk(riff: bytes, chunk_id: bytes, payload: bytes) -> bytes:
    """`riff` with one more chunk at its end and its RIFF size (which the decoder's truncation check reads) grown
    to match; RIFF chunks start at even offsets, so odd sizes get a pad byte."""
    pad = b"\x00" * (len(riff) % 2)
    chunk = chunk_id + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)
    out = bytearray(riff + pad + chunk)
    out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


def _riff_chunk(raw: bytes, chunk_ids: tuple[bytes, ...]) -> bytes | None:
    """The payload of the first top-level chunk of a RIFF/WAVE file with one of these ids (None if there is none,
    or if it runs past the end of the file)."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(raw):
        size = struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        if raw[pos : pos + 4] in chunk_ids:
            return raw[pos + 8 : pos + 8 + size] if pos + 8 + size <= len(raw) else None
        pos += 8 + size + size % 2
    return None


def _syncsafe(size: int) -> bytes:
    """An ID3v2.4 size: 28 bits in four bytes of 7 bits each, so no size byte looks like an MPEG sync."""
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _unsyncsafe(data: bytes) -> int:
    size = 0
    for byte in data:
        size = size << 7 | byte & 0x7F
    return size


def _id3_frame(frame_id: bytes, body: bytes) -> bytes:
    return frame_id + _syncsafe(len(body)) + b"\x00\x00" + body  # no frame flags


def _id3_tag(title: str, software: str, comment: str) -> bytes:
    """An ID3v2.4 tag, all text UTF-8 (encoding byte 3): TIT2 the title, TSSE the software, COMM (language
    'eng', empty description) the record. Empty values get no frame."""
    utf8 = b"\x03"
    frames = b"".join(
        _id3_frame(frame_id, body)
        for frame_id, body, value in (
            (b"TIT2", utf8 + title.encode("utf-8"), title),
            (b"TSSE", utf8 + software.encode("utf-8"), software),
            (b"COMM", utf8 + b"eng\x00" + comment.encode("utf-8"), comment),
        )
        if value
    )
    return b"ID3\x04\x00\x00" + _syncsafe(len(frames)) + frames  # version 2.4.0, no flags


def _id3_frames(tag: bytes) -> list[tuple[bytes, bytes]]:
    """(id, body) of each plain frame of an ID3v2.3 or v2.4 tag. Frames that are compressed, encrypted or
    otherwise transformed (aigc writes none), unsynchronised tags and anything after damage are left out."""
    if len(tag) < 10 or tag[:3] != b"ID3" or tag[3] not in (3, 4) or tag[5] & 0x80:
        return []
    v24, end, pos = tag[3] == 4, min(10 + _unsyncsafe(tag[6:10]), len(tag)), 10
    if tag[5] & 0x40:  # an extended header: v2.4 counts its own size field, v2.3 does not
        pos += _unsyncsafe(tag[10:14]) if v24 else 4 + int.from_bytes(tag[10:14], "big")
    frames = []
    while pos + 10 <= end and tag[pos] != 0:  # NULs are padding: the frames have ended
        raw_size = tag[pos + 4 : pos + 8]
        size = _unsyncsafe(raw_size) if v24 else int.from_bytes(raw_size, "big")
        if pos + 10 + size > end:
            break
        if tag[pos + 9] == 0:
            frames.append((tag[pos : pos + 4], tag[pos + 10 : pos + 10 + size]))
        pos += 10 + size
    return frames


def _id3_comment(body: bytes) -> str | None:
    """A COMM frame's text (after its encoding byte, language and NUL-ended description), or None if damaged."""
    codecs = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}
    if len(body) < 4 or body[0] not in codecs:
        return None
    rest, nul = body[4:], b"\x00\x00" if body[0] in (1, 2) else b"\x00"
    cut = rest.find(nul)
    while cut >= 0 and len(nul) == 2 and cut % 2:  # a UTF-16 NUL starts at an even offset
        cut = rest.find(nul, cut + 1)
    if cut < 0:
        return None
    try:
        return rest[cut + len(nul) :].decode(codecs[body[0]]).rstrip("\x00")
    except UnicodeDecodeError:
        return None

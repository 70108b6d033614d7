"""Files that survive crashes: atomic writes, append-only JSON lines that repair a torn tail, fresh names.

Every writer in aigc (assets, manifests, run records, the library, galleries) goes through here, so one
place decides what "safe on disk" means: a reader sees a whole file or none of it, and a kill -9 in the
middle of an append costs at most the line being written.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync it, then rename it over: all of it or none.

    The file gets the permissions a plain open() would give it under the current umask (mkstemp's
    private 0600 is not what a user sharing a folder expects).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """An indented UTF-8 JSON file, written atomically."""
    return write_atomic(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]], *, lock: bool = False) -> None:
    """Append JSON lines and fsync them. After a torn last line (a crash mid-append) start on a fresh line.

    `lock=True` takes a file lock first, for files that several processes append to at once.
    """
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if not data:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if lock:
        from filelock import FileLock

        with FileLock(str(path) + ".lock"):
            _append(path, data)
    else:
        _append(path, data)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab+") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping a line a crash cut short (and anything not an object)."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(value, dict):
                yield value


def unique_path(directory: str | os.PathLike, stem: str, suffix: str = "") -> Path:
    """`directory/stem+suffix`, or `stem-1`, `stem-2`... whichever does not exist yet: nothing is overwritten.

    With an empty suffix it names a fresh directory just the same.
    """
    directory = Path(directory)
    candidate, counter = directory / f"{stem}{suffix}", 1
    while candidate.exists():
        candidate = directory / f"{stem}-{counter}{suffix}"
        counter += 1
    return candidate


def slug(text: str, size: int = 40, fallback: str = "output") -> str:
    """A file-name-safe, lower-case piece of `text`: letters and digits joined by dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:size].rstrip("-") or fallback


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (os.umask would, for a moment, for
    every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

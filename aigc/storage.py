"""Files that survive crashes: atomic writes, append-only JSON lines that repair a torn tail, fresh names.

Every writer in aigc (assets, manifests, run records, the library, galleries) goes through here, so one
place decides what "safe on disk" means: a reader sees a whole file or none of it, and a kill -9 in the
middle of an append costs at most the line being written.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import limits
from .errors import ConfigError, StorageError

PART = ".part"  # the suffix of a write in progress; one left behind by a kill is removed by clean_partial()


@contextmanager
def explained(action: str, path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError into one line that names the file and the system's reason (disk full, read-only...)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        raise StorageError(
            f"cannot {action} {path}: {reason}"
            f"{' (the disk is full: free some space, then run the same command again)' if error.errno == 28 else ''}"
            "."
        ) from None


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o666) -> Path:
    """Write to a temporary file beside `path`, fsync it, then rename it over: all of it or none.

    The file gets the permissions a plain open() would give it under the current umask (mkstemp's
    private 0600 is not what a user sharing a folder expects); a secret passes mode=0o600.
    """
    path = Path(path)
    with explained("write", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def path_arg(value: Any, what: str, field: str | None = None) -> Path:
    """A path a caller gave (str or PathLike), checked so that no later file operation fails obscurely: not
    empty, no NUL or other control characters, not absurdly long, `~` that resolves."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a path (str), not {type(value).__name__}.", field=field)
    if not value.strip():
        raise ConfigError(f"{what}={value!r} is empty; pass a path.", field=field)
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise ConfigError(f"{what}={value!r:.80} holds a control character; pass a plain path.", field=field)
    if len(value) > 4096 or any(len(part.encode("utf-8", "replace")) > 255 for part in Path(value).parts):
        raise ConfigError(
            f"{what}={value[:60]!r}... is too long for a path (a name <= 255 bytes, all <= 4096).", field=field
        )
    try:
        return Path(value).expanduser()
    except RuntimeError as error:  # "~nosuchuser"
        raise ConfigError(f"{what}={value!r}: {error}", field=field) from None


def regular_file(path: Path, what: str) -> int:
    """The size of `path`, which must be a regular file (a FIFO would block a read, /dev/zero never end)."""
    try:
        info = path.stat()
    except (OSError, RuntimeError, ValueError) as error:  # missing, permission, symlink loop, ...
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot read {what} {path}: {reason}.") from None
    import stat

    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"cannot read {what} {path}: it is a directory.")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"cannot read {what} {path}: it is not a regular file (a device, pipe or socket).")
    return info.st_size


def read_bytes(path: str | os.PathLike, what: str, limit: str = "file_mb") -> bytes:
    """A regular file's bytes, within the `limit` (in MiB), or one clear line."""
    path = path_arg(path, what)
    size = regular_file(path, what)
    limits.check(limit, -(-size // 2**20), f"the size of {what} {path} in MiB")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror or error}.") from None


def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file (a byte-order mark is dropped) within the file size limit, or one clear line."""
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot read {what} {path}: it is not UTF-8 text (byte {error.start}).") from None


def sha256_file(path: str | os.PathLike) -> str:
    """A file's SHA-256 (hex), read a MiB at a time: how a server and a client agree that a copy is whole."""
    import hashlib

    digest = hashlib.sha256()
    with explained("read", path), open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    with explained("append to", path):
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


def read_jsonl(path: str | os.PathLike, skipped: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping a line a crash cut short (and anything not an object);
    the numbers of skipped lines are appended to `skipped` when given, so a caller can say so."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    except OSError as error:
        raise StorageError(f"cannot read {path}: {error.strerror or error}.") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):  # torn, binary or hostile (deeply nested) lines
                value = None
            if isinstance(value, dict):
                yield value
            elif skipped is not None:
                skipped.append(number)


def writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """A directory aigc may write into, made if missing; checked before any work, so a read-only or misnamed
    output fails at once rather than after the work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; pass a directory (it is made if it does not exist).", field="out")
    with explained("write to", path):
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".aigc-probe-", suffix=PART, delete=True)
        probe.close()
    return path


@contextmanager
def locked_dir(directory: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold `directory` for one writer (a batch, a workflow run): a second one at the same time is refused at
    once, rather than both writing one manifest."""
    from filelock import FileLock, Timeout

    directory = writable_dir(directory)
    lock = FileLock(str(directory / ".aigc.lock"), timeout=0)
    try:
        with lock:
            yield directory
    except Timeout:
        raise ConfigError(
            f"{directory} is in use by another aigc {what} right now; wait for it to finish, or use "
            "another output directory.",
            field="out",
        ) from None


def clean_partial(directory: str | os.PathLike[str], recursive: bool = False) -> int:
    """Remove the temporary files a killed write left in `directory` (its own `.NAME.RANDOM.part` files), and with
    `recursive` in every folder below it too (symbolic links are not followed)."""
    if recursive:
        leftovers = [
            Path(folder, name) for folder, _, names in os.walk(directory) for name in fnmatch.filter(names, f".*{PART}")
        ]
    else:
        leftovers = list(Path(directory).glob(f".*{PART}"))
    removed = 0
    for leftover in leftovers:
        with explained("remove", leftover):
            leftover.unlink(missing_ok=True)
        removed += 1
    return removed


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
    """A file-name-safe, lower-case piece of `text`: ASCII letters and digits joined by dashes. Other scripts are
    transliterated first ("Café déjà vu" -> cafe-deja-vu, "Москва" -> moskva), so a name keeps its words."""
    from anyascii import anyascii

    return re.sub(r"[^a-z0-9]+", "-", anyascii(text).lower()).strip("-")[:size].rstrip("-") or fallback


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

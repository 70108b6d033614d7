"""The team's library: embeddings of assets already made, kept on disk, so new work is judged novel against them.

One append-only JSON-lines file per library, written under a file lock: several processes (a batch, a
notebook, a Ray worker) can add to the same library at once without losing or tearing an entry.
"""

from __future__ import annotations

import base64
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from ..errors import ConfigError
from ..storage import append_jsonl, path_arg, read_jsonl

if TYPE_CHECKING:
    from .scorer import CreativityScorer

FILE = "library.jsonl"


def default_library_path() -> Path:
    """$AIGC_LIBRARY, else the user data dir."""
    from platformdirs import user_data_dir

    return Path(os.environ.get("AIGC_LIBRARY") or Path(user_data_dir("aigc")) / "library").expanduser()


class Library:
    """`Library(path)`: `.add(items)` embeds and stores them; `len()`; `.vectors(space)` for the scorer."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = path_arg(path, "library", field="library") if path is not None else default_library_path()
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"Library({str(self.path)!r}) is a file; a library is a directory (it holds {FILE}).",
                              field="library")
        self._file = self.path / FILE
        self._cache: tuple[tuple[int, int], list[dict[str, Any]]] | None = None
        self.skipped = 0  # lines that were torn or malformed: skipped (and reported once), never fatal

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r}, {len(self)} entries)"

    def __len__(self) -> int:
        return len(self._entries())

    def add(self, items: Iterable[Any], *, scorer: CreativityScorer | None = None, prompt: str | None = None) -> int:
        """Embed `items` (Assets or raw str / PIL image / Audio) and append them; returns how many were added."""
        from .scorer import default_scorer

        scorer = scorer or default_scorer()
        rows = []
        for item, (space, vector) in zip(items := list(items), scorer.embed(items)):
            rows.append({
                "space": space,
                "vector": base64.b64encode(np.asarray(vector, np.float32).tobytes()).decode("ascii"),
                "prompt": getattr(item, "prompt", prompt),
                "seed": getattr(item, "seed", None),
                "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
        self._append(rows)
        return len(rows)

    def add_vectors(self, space: str, vectors: np.ndarray, prompts: list[str | None]) -> None:
        """Store vectors the scorer already computed (what `generate` does with accepted assets)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._append([{"space": space, "vector": base64.b64encode(np.asarray(v, np.float32).tobytes()).decode("ascii"),
                       "prompt": p, "added": now} for v, p in zip(vectors, prompts)])

    def vectors(self, space: str) -> np.ndarray:
        """Every stored vector of one embedding space, as rows (of the width most of them have)."""
        rows = [e["_vector"] for e in self._entries() if e["space"] == space]
        if not rows:
            return np.zeros((0, 0), np.float32)
        width = max({len(r) for r in rows}, key=[len(r) for r in rows].count)
        return np.stack([r for r in rows if len(r) == width])

    def _append(self, rows: list[dict[str, Any]]) -> None:
        append_jsonl(self._file, rows, lock=True)

    def _entries(self) -> list[dict[str, Any]]:
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._cache is None or self._cache[0] != stamp:
            skipped: list[int] = []
            entries = [e for e in map(_decoded, read_jsonl(self._file, skipped)) if e is not None]
            bad = len(skipped) + sum(1 for _ in read_jsonl(self._file)) - len(entries)
            if bad and bad != self.skipped:
                warnings.warn(f"aigc library {self._file}: {bad} torn or malformed line(s) skipped; the rest is used.",
                              stacklevel=3)
            self.skipped = bad
            self._cache = (stamp, entries)
        return self._cache[1]


def _decoded(entry: dict[str, Any]) -> dict[str, Any] | None:
    """An entry with its vector decoded, or None for a line that is not one of ours (a `{}`, a bad vector)."""
    space, vector = entry.get("space"), entry.get("vector")
    if not isinstance(space, str) or not isinstance(vector, str):
        return None
    try:
        values = np.frombuffer(base64.b64decode(vector, validate=True), np.float32)
    except (ValueError, TypeError):
        return None
    if not values.size or not np.all(np.isfinite(values)):
        return None
    return {**entry, "_vector": values}

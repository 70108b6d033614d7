"""The team's library: embeddings of assets already made, kept on disk, so new work is judged novel against them.

One append-only JSON-lines file per library, written under a file lock: several processes (a batch, a
notebook, a Ray worker) can add to the same library at once without losing or tearing an entry.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from ..storage import append_jsonl, read_jsonl

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
        self.path = Path(path).expanduser() if path is not None else default_library_path()
        self._file = self.path / FILE
        self._cache: tuple[tuple[int, int], list[dict[str, Any]]] | None = None

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
        """Every stored vector of one embedding space, as rows."""
        rows = [np.frombuffer(base64.b64decode(e["vector"]), np.float32) for e in self._entries() if e["space"] == space]
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    def _append(self, rows: list[dict[str, Any]]) -> None:
        append_jsonl(self._file, rows, lock=True)

    def _entries(self) -> list[dict[str, Any]]:
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._cache is None or self._cache[0] != stamp:
            # a line cut off by a crash mid-write is skipped, the rest kept
            self._cache = (stamp, [e for e in read_jsonl(self._file) if "space" in e and "vector" in e])
        return self._cache[1]

"""The team's library: embeddings of assets already made, kept on disk, so new work is judged novel against them.

One append-only JSON-lines file per library, written under a file lock: several processes (a batch, a
notebook, a Ray worker) can add to the same library at once without losing or tearing an entry.
"""

from __future__ import annotations

import base64
import os
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..storage import append_jsonl, path_arg, read_jsonl

if TYPE_CHECKING:
    from .ratings import Rating, Ratings
    from .scorer import CreativityScorer
    from .taste import TasteModel

FILE = "library.jsonl"


def default_library_path() -> Path:
    """$AIGC_LIBRARY, else the user data dir."""
    from platformdirs import user_data_dir

    return Path(os.environ.get("AIGC_LIBRARY") or Path(user_data_dir("aigc")) / "library").expanduser()


class Library:
    """`Library(path)`: `.add(items)` embeds and stores them; `len()`; `.vectors(space)` for the scorer;
    `.rate(item, +1)`, `.prefer(a, b)` and `.ratings()` for people's judgements, kept beside it, and `.taste(space)`,
    the preference model learned from them that the scorer adds as its `taste` part. `taste_user="alice"` makes
    that one person's taste (default: the whole team's)."""

    def __init__(self, path: str | os.PathLike | None = None, *, taste_user: str | None = None) -> None:
        self.path = path_arg(path, "library", field="library") if path is not None else default_library_path()
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(
                f"Library({str(self.path)!r}) is a file; a library is a directory (it holds {FILE}).", field="library"
            )
        self._file = self.path / FILE
        self._cache: tuple[tuple[int, int], list[dict[str, Any]]] | None = None
        self.skipped = 0  # lines that were torn or malformed: skipped (and reported once), never fatal
        self.taste_user = _taste_user(taste_user)

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r}, {len(self)} entries)"

    def __len__(self) -> int:
        return len(self._entries())

    def add(self, items: Iterable[Any], *, scorer: CreativityScorer | None = None, prompt: str | None = None) -> int:
        """Embed `items` (Assets or raw str / PIL image / Audio) and append them; returns how many were added."""
        from .scorer import default_scorer

        scorer = scorer or default_scorer()
        rows = []
        for item, (space, vector) in zip(items := list(items), scorer.embed(items), strict=True):
            rows.append(
                {
                    "space": space,
                    "vector": base64.b64encode(np.asarray(vector, np.float32).tobytes()).decode("ascii"),
                    "prompt": getattr(item, "prompt", prompt),
                    "seed": getattr(item, "seed", None),
                    "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
        self._append(rows)
        return len(rows)

    # --- people's ratings (scoring/ratings.py keeps them beside the library) ----------------------------
    def rate(
        self,
        item: Any,
        value: int,
        *,
        user: str | None = None,
        note: str | None = None,
        ref: str | None = None,
        scorer: CreativityScorer | None = None,
    ) -> Rating:
        """Thumbs up (+1) or down (-1) on an Asset (or raw data); 0 takes it back. The latest one counts."""
        return self._ratings().thumb(item, value, user=user, note=note, ref=ref, scorer=scorer)

    def prefer(
        self,
        better: Any,
        worse: Any,
        *,
        user: str | None = None,
        note: str | None = None,
        refs: tuple[str | None, str | None] = (None, None),
        scorer: CreativityScorer | None = None,
    ) -> Rating:
        """Record a choice: `better` over `worse`."""
        return self._ratings().prefer(better, worse, user=user, note=note, refs=refs, scorer=scorer)

    def ratings(self, user: str | None = None) -> list[Rating]:
        """The ratings that count (each user's latest thumb per item, and every choice); of one user if given."""
        return self._ratings().all(user)

    def taste(self, space: str) -> TasteModel | None:
        """The taste model of one embedding space (used or not, and why); None when nothing of it was rated.
        Fitted once the space has enough ratings, stored beside the library, refitted when ratings change."""
        from .taste import taste

        return taste(self.path, space, self.taste_user)

    def tastes(self) -> list[TasteModel]:
        """A taste model (used or not, and why) for every embedding space that has ratings."""
        from .taste import tastes

        return tastes(self.path, self.taste_user)

    def _ratings(self) -> Ratings:
        from .ratings import Ratings

        return Ratings(self.path)

    def add_vectors(self, space: str, vectors: np.ndarray, prompts: list[str | None]) -> None:
        """Store vectors the scorer already computed (what `generate` does with accepted assets)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._append(
            [
                {
                    "space": space,
                    "vector": base64.b64encode(np.asarray(v, np.float32).tobytes()).decode("ascii"),
                    "prompt": p,
                    "added": now,
                }
                for v, p in zip(vectors, prompts, strict=True)
            ]
        )

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
                warnings.warn(
                    f"aigc library {self._file}: {bad} torn or malformed line(s) skipped; the rest is used.",
                    stacklevel=3,
                )
            self.skipped = bad
            self._cache = (stamp, entries)
        return self._cache[1]


def _taste_user(user: str | None) -> str | None:
    if user is None:
        return None
    from .ratings import checked_user

    return checked_user(user)


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

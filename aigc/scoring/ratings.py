"""People's ratings of assets, kept with the team library: thumbs (+1 / -1, 0 takes one back) and pairwise
choices ("A over B"). One append-only JSON-lines file (`ratings.jsonl` beside `library.jsonl`), written under
a file lock, so a notebook, the CLI and the server can rate into one library at once.

Each rating carries what the taste model learns from, so it never needs the rated files again: the item's
content key (a hash of its data: the same image rated from a file or from the server is one item), kind,
prompt, and its embedding in the scorer's space.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import plain_text
from ..errors import ConfigError
from ..storage import append_jsonl, read_jsonl

if TYPE_CHECKING:
    from .scorer import CreativityScorer

FILE = "ratings.jsonl"
NOTE_CHARS = 2000
REF_CHARS = 4096
USER = re.compile(r"[\w.@+-]+(?: [\w.@+-]+)*")


@dataclass(frozen=True)
class Rated:
    """One rated item as stored: enough to learn from without the file."""

    key: str  # sha256 of the item's data, 24 hex digits
    kind: str
    prompt: str | None
    space: str
    vector: np.ndarray
    ref: str | None = None  # where it came from (a file, a server asset id), for people to find it
    # added for aigc.tuning (issue 18, the optimiser): what tuning a generator needs beyond the embedding
    text: str | None = None  # a text item's own text (DPO trains on the texts themselves)
    origin: dict[str, Any] | None = None  # an Asset's seed, backend, model and scalar knobs (a GAN latent's seed)


@dataclass(frozen=True)
class Rating:
    """A thumb (`value` +1 / -1 on `item`) or a choice (`item` preferred over `other`, value +1)."""

    type: str  # "thumb" or "pair"
    user: str
    value: int
    item: Rated
    other: Rated | None = None
    note: str | None = None
    rated: str = ""


def default_user() -> str:
    """$AIGC_USER, else the login name: whose taste a rating is."""
    return os.environ.get("AIGC_USER") or getpass.getuser()


def content_key(kind: str, data: Any) -> str:
    """The same item, wherever it was read from: a hash of its text, pixels or samples."""
    if kind == "text":
        raw = data.encode("utf-8")
    elif kind == "image":
        image = data.convert("RGB")
        raw = f"{image.width}x{image.height}:".encode() + image.tobytes()
    else:
        raw = f"{data.sample_rate}:".encode() + np.asarray(data.samples, np.float32).tobytes()
    return hashlib.sha256(kind.encode() + b"\0" + raw).hexdigest()[:24]


class Ratings:
    """The ratings file of one library directory."""

    def __init__(self, directory: Path) -> None:
        self.file = Path(directory) / FILE

    def thumb(
        self,
        item: Any,
        value: int,
        *,
        user: str | None = None,
        note: str | None = None,
        ref: str | None = None,
        scorer: CreativityScorer | None = None,
    ) -> Rating:
        """Rate `item` (an Asset, or raw data with its prompt in an Item) up (+1) or down (-1); 0 takes a
        user's rating of it back. The latest rating of an item by a user is the one that counts."""
        if isinstance(value, bool) or not isinstance(value, int) or value not in (-1, 0, 1):
            raise ConfigError(f"a rating is +1 (up), -1 (down) or 0 (take it back), not {value!r}.", field="value")
        user, note, ref = checked_user(user), _note(note), _ref(ref)  # checked before any model loads
        rated = self._rated([item], [ref], scorer)[0]
        return self._append(Rating("thumb", user, value, rated, note=note, rated=_now()))

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
        """Record that `better` was chosen over `worse` (two items of one kind)."""
        if not isinstance(refs, (tuple, list)) or len(refs) != 2:
            raise ConfigError(
                f"refs={refs!r:.60} must be a pair: (where the better came from, the worse).", field="refs"
            )
        user, note = checked_user(user), _note(note)
        first, second = self._rated([better, worse], [_ref(r) for r in refs], scorer)
        if first.kind != second.kind:
            raise ConfigError(f"a choice is between two items of one kind, not a {first.kind} and a {second.kind}.")
        if first.key == second.key:
            raise ConfigError("a choice needs two different items; these two are the same.")
        return self._append(Rating("pair", user, 1, first, second, note, _now()))

    def all(self, user: str | None = None) -> list[Rating]:
        """Every choice, and each (user, item)'s latest thumb unless it was taken back; of one user if given."""
        thumbs: dict[tuple[str, str], Rating] = {}
        pairs: list[Rating] = []
        for line in read_jsonl(self.file):
            rating = _decoded(line)
            if rating is None or (user is not None and rating.user != user):
                continue
            if rating.type == "pair":
                pairs.append(rating)
            else:
                thumbs.pop((rating.user, rating.item.key), None)  # the latest goes last, in rating order
                thumbs[(rating.user, rating.item.key)] = rating
        return [r for r in thumbs.values() if r.value != 0] + pairs

    def _rated(self, items: list[Any], refs: list[str | None], scorer: CreativityScorer | None) -> list[Rated]:
        from .scorer import checked_items, default_scorer

        checked = checked_items(items)
        embedded = (scorer or default_scorer()).embed(checked)
        return [
            Rated(
                content_key(item.kind, item.data),
                item.kind,
                item.prompt,
                space,
                np.asarray(vector, np.float32),
                ref,
                item.data if item.kind == "text" else None,
                _origin(thing),
            )
            for thing, item, (space, vector), ref in zip(items, checked, embedded, refs, strict=True)
        ]

    def _append(self, rating: Rating) -> Rating:
        line = {
            "type": rating.type,
            "user": rating.user,
            "value": rating.value,
            "item": _encoded(rating.item),
            "note": rating.note,
            "rated": rating.rated,
        }
        if rating.other is not None:
            line["other"] = _encoded(rating.other)
        append_jsonl(self.file, [line], lock=True)
        return rating


def checked_user(user: str | None) -> str:
    """A user name (default: default_user()): 1-100 letters, digits, inner spaces and . _ @ + - (it also names
    that user's taste file)."""
    user = default_user() if user is None else user
    if not isinstance(user, str) or len(user) > 100 or not USER.fullmatch(user):
        raise ConfigError(
            f"user={user!r:.120}: a user name is 1-100 letters, digits, inner spaces and . _ @ + -.", field="user"
        )
    return user


def _note(note: str | None) -> str | None:
    if note is None or note == "":
        return None
    if not isinstance(note, str) or len(note) > NOTE_CHARS:
        raise ConfigError(f"a note is text of at most {NOTE_CHARS} characters.", field="note")
    return plain_text("note", note, field="note")


def _ref(ref: str | None) -> str | None:
    if ref is not None and (not isinstance(ref, str) or len(ref) > REF_CHARS):
        raise ConfigError(
            f"ref={ref!r:.60} must be text of at most {REF_CHARS} characters (a path, an asset id).", field="ref"
        )
    return ref if ref is None else plain_text("ref", ref, field="ref")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _origin(thing: Any) -> dict[str, Any] | None:
    """How an Asset was made (seed, backend, model, its scalar knobs), so a generator can be tuned from it."""
    from ..media.assets import Asset

    if not isinstance(thing, Asset):
        return None
    knobs = {k: v for k, v in thing.params.items() if isinstance(v, (int, float, bool, str)) or v is None}
    return {"seed": thing.seed, "backend": thing.backend, "model": thing.model, "params": knobs}


def _encoded(item: Rated) -> dict[str, Any]:
    return {
        "key": item.key,
        "kind": item.kind,
        "prompt": item.prompt,
        "space": item.space,
        "ref": item.ref,
        "vector": base64.b64encode(item.vector.astype(np.float32).tobytes()).decode("ascii"),
        "text": item.text,
        "origin": item.origin,
    }


def _decoded(line: dict[str, Any]) -> Rating | None:
    """A stored rating, or None for a line that is not a whole one (it is skipped, never fatal)."""
    try:
        item = _item(line["item"])
        other = _item(line["other"]) if line.get("other") is not None else None
        kind, value = line["type"], line["value"]
        if kind not in ("thumb", "pair") or value not in (-1, 0, 1) or (kind == "pair") != (other is not None):
            return None
        return Rating(kind, str(line["user"]), int(value), item, other, line.get("note"), str(line.get("rated", "")))
    except (KeyError, TypeError, ValueError):
        return None


def _item(raw: dict[str, Any]) -> Rated:
    vector = np.frombuffer(base64.b64decode(raw["vector"], validate=True), np.float32)
    if not vector.size or not np.all(np.isfinite(vector)):
        raise ValueError("bad vector")
    origin = raw.get("origin") if isinstance(raw.get("origin"), dict) else None
    text = raw.get("text") if isinstance(raw.get("text"), str) else None
    return Rated(
        str(raw["key"]), str(raw["kind"]), raw.get("prompt"), str(raw["space"]), vector, raw.get("ref"), text, origin
    )

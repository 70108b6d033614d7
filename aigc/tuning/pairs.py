"""Preference pairs for tuning a text model: (prompt, chosen text, rejected text), from what people rated.

Three sources, strongest first: pairwise choices ("A over B"); thumbs (a liked and a disliked text of the same
prompt, then a liked text against disliked ones of other prompts, which still says "more like this"); and the
candidates of best_of calls, best against worst of each prompt. best_of rounds are not stored by the scorer's
loop (only the chosen assets come back), so that source is a folder of saved candidates: a call made with
`-n` equal to `--best-of` keeps them all, each with its score.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..media.assets import Asset
    from ..scoring.ratings import Rated, Rating

CROSS_PROMPT = 2  # disliked texts of other prompts each liked text is paired with


@dataclass(frozen=True)
class TextPair:
    prompt: str
    chosen: str
    rejected: str
    source: str  # "choice", "thumbs" (same prompt), "thumbs-any" (other prompts) or "best-of"


@dataclass
class Found:
    """The pairs, and how many rated items could not be used (so a report can say why there are few)."""

    pairs: list[TextPair]
    no_text: int = 0  # rated before ratings kept the text, or not text at all
    no_prompt: int = 0

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pair in self.pairs:
            counts[pair.source] = counts.get(pair.source, 0) + 1
        return counts


@dataclass(frozen=True)
class _Text:
    """A rated text item with what a pair needs."""

    key: str
    prompt: str
    text: str


def from_ratings(ratings: Iterable[Rating], *, seed: int = 0) -> Found:
    """Pairs from choices and thumbs of text items; deterministic for a seed (cross-prompt pairs are drawn)."""
    found = Found([])
    liked: list[_Text] = []
    disliked: list[_Text] = []
    for rating in ratings:
        items = [rating.item] + ([rating.other] if rating.other is not None else [])
        usable = [text for item in items if (text := _usable(item, found)) is not None]
        if len(usable) < len(items):
            continue
        if rating.type == "pair":
            found.pairs.append(TextPair(usable[0].prompt, usable[0].text, usable[1].text, "choice"))
        else:
            (liked if rating.value > 0 else disliked).append(usable[0])
    found.pairs += _thumb_pairs(liked, disliked, random.Random(seed))
    found.pairs = _unique(found.pairs)
    return found


def _usable(item: Rated, found: Found) -> _Text | None:
    """The item as a text with its prompt, or None (counted in `found`) when it has none."""
    if item.kind != "text" or not item.text:
        found.no_text += item.kind == "text"
        return None
    if not item.prompt:
        found.no_prompt += 1
        return None
    return _Text(item.key, item.prompt, item.text)


def _thumb_pairs(liked: list[_Text], disliked: list[_Text], rng: random.Random) -> list[TextPair]:
    pairs = [
        TextPair(good.prompt, good.text, bad.text, "thumbs")
        for good in liked
        for bad in disliked
        if good.prompt == bad.prompt and good.key != bad.key
    ]
    for good in liked:
        others = [bad for bad in disliked if bad.prompt != good.prompt]
        for bad in rng.sample(others, min(CROSS_PROMPT, len(others))):
            pairs.append(TextPair(good.prompt, good.text, bad.text, "thumbs-any"))
    return pairs


def best_vs_worst(assets: Iterable[Asset]) -> list[TextPair]:
    """For each prompt with two or more scored text candidates: the best-scored over the worst-scored."""
    by_prompt: dict[str, list[tuple[float, str]]] = {}  # prompt -> (score, text) of each candidate
    for asset in assets:
        if asset.kind == "text" and asset.score is not None and asset.prompt and isinstance(asset.data, str):
            by_prompt.setdefault(asset.prompt, []).append((asset.score, asset.data))
    pairs = []
    for prompt, group in by_prompt.items():
        if len(group) < 2:
            continue
        ranked = sorted(group, key=lambda scored: scored[0], reverse=True)
        (best, chosen), (worst, rejected) = ranked[0], ranked[-1]
        if best > worst and chosen != rejected:
            pairs.append(TextPair(prompt, chosen, rejected, "best-of"))
    return pairs


def saved_candidates(directory: str | Path) -> list[Asset]:
    """The scored text assets saved in a folder (`aigc generate text ... --best-of 8 -n 8 --out DIR`)."""
    from ..media.assets import load

    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--candidates {str(directory)!r} is not a folder of saved text assets.", field="candidates")
    assets = []
    for path in sorted(folder.rglob("*.txt")):
        try:
            assets.append(load(path))
        except (ConfigError, OSError, ValueError):
            continue  # a text without an aigc record holds no score: not a candidate
    return assets


def fingerprint(pairs: list[TextPair]) -> str:
    """What the pairs are, in 16 hex digits: an adapter's record names its training data by it."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps(asdict(pair), sort_keys=True).encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def _unique(pairs: list[TextPair]) -> list[TextPair]:
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for pair in pairs:
        if pair.chosen != pair.rejected and (pair.prompt, pair.chosen, pair.rejected) not in seen:
            seen.add((pair.prompt, pair.chosen, pair.rejected))
            kept.append(pair)
    return kept


def as_rows(pairs: list[TextPair], chat: bool) -> list[dict[str, Any]]:
    """The pairs as TRL's preference rows: conversational for a chat model (TRL applies its template the way
    the text generator does), plain text otherwise."""
    if chat:
        return [
            {
                "prompt": [{"role": "user", "content": p.prompt}],
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]

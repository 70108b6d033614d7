"""The feedback loop: generate candidates, score them, keep the best, and re-sample until a bar is met.

Re-sampling uses fresh seeds and moves the knobs the weakest part of the best candidate points at; how each
knob moves is declared on the backend itself (its Params' nudges, see generators/knobs.py), e.g. low
novelty -> more temperature, less guidance; low relevance -> less temperature, more guidance; low quality
-> more steps. Every round is recorded, so the path that led to an asset can be read (and replayed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import seeds as seed_rule
from ..generators.knobs import WEAKNESSES
from ..media.assets import Asset
from ..records import Round, Search

if TYPE_CHECKING:
    from ..generators.base import Generator


@dataclass(frozen=True)
class Policy:
    n: int
    per_attempt: int
    min_score: float | None
    max_attempts: int
    diverse: bool


@dataclass(frozen=True)
class Judged:
    """The library candidates were judged against (None: none) and its size then, recorded with the choice."""

    library: str | None = None
    size: int = 0


def weakest(scores: dict[str, Any]) -> str | None:
    """The lowest measured part of a score, the one the next round's knobs should help."""
    measured = {part: scores[part] for part in WEAKNESSES if scores.get(part) is not None}
    return min(measured, key=measured.__getitem__) if measured else None


def prompt_seed(seed: int, prompt: int) -> int:
    """Where the search for the prompt at index `prompt` of one call starts: the call's seed for the first."""
    return seed if prompt == 0 else seed_rule.derive(seed, "prompt", prompt)


def round_seeds(base: int, attempt: int, count: int) -> list[int]:
    """One round's candidate seeds: base, base+1... for the first round (so each candidate's seed reproduces it
    alone), then from a seed derived for each later round."""
    start = base if attempt == 1 else seed_rule.derive(base, "round", attempt)
    return [start + i for i in range(count)]


def search(
    produce: Callable[[list[int], dict[str, Any]], list[Asset]],
    judge: Callable[[list[Asset]], None],
    embed: Callable[[list[Asset]], np.ndarray],
    policy: Policy,
    seeds: Callable[[int], list[int]],
    knobs: dict[str, Any],
    backend: type[Generator],
    judged: Judged = Judged(),
) -> list[Asset]:
    """Run the loop for one prompt and return the `n` chosen assets, best first.

    `seeds(attempt)` gives a round's candidate seeds; the backend's own nudges move its knobs between rounds.
    """
    movable = [name for name, param in backend.params.items() if param.nudge is not None and name in knobs]
    pool: list[tuple[int, Asset]] = []
    rounds: list[Round] = []
    for attempt in range(1, policy.max_attempts + 1):
        candidates = produce(seeds(attempt), knobs)
        judge(candidates)
        pool += [(attempt, asset) for asset in candidates]
        best = max(candidates, key=lambda a: a.score or 0.0)
        rounds.append(Round(attempt, {name: knobs[name] for name in movable}, round(best.score or 0.0, 4)))
        cleared = [a for _, a in pool if policy.min_score is None or (a.score or 0.0) >= policy.min_score]
        if len(cleared) >= policy.n or attempt == policy.max_attempts:
            break
        part = weakest(best.scores)
        knobs = backend.nudged(knobs, part) if part else knobs
    return _choose(pool, rounds, policy, embed, judged)


def _choose(
    pool: list[tuple[int, Asset]],
    rounds: list[Round],
    policy: Policy,
    embed: Callable[[list[Asset]], np.ndarray],
    judged: Judged,
) -> list[Asset]:
    """The n best of every round's candidates (those that cleared the bar first), with the search recorded."""
    made_in = {id(asset): attempt for attempt, asset in pool}
    ranked = sorted((a for _, a in pool), key=lambda a: a.score or 0.0, reverse=True)
    if policy.min_score is not None:
        bar = policy.min_score
        ranked = [a for a in ranked if (a.score or 0.0) >= bar] + [a for a in ranked if (a.score or 0.0) < bar]
    chosen = select_diverse(ranked, embed(ranked), policy.n) if policy.diverse else ranked[: policy.n]
    for rank, asset in enumerate(chosen, 1):
        asset.rank, asset.candidates, asset.attempts = rank, len(pool), len(rounds)
        met = None if policy.min_score is None else (asset.score or 0.0) >= policy.min_score
        asset.search = Search(list(rounds), made_in[id(asset)], policy.min_score, met, judged.library, judged.size)
    return chosen


def select_diverse(ranked: Sequence[Asset], vectors: np.ndarray, n: int, trade_off: float = 0.7) -> list[Asset]:
    """Maximal marginal relevance: each pick maximises score minus similarity to what was already picked."""
    chosen: list[int] = []
    remaining = list(range(len(ranked)))
    while remaining and len(chosen) < n:

        def gain(i: int) -> float:
            similarity = max((float(vectors[i] @ vectors[j]) for j in chosen), default=0.0)
            return trade_off * (ranked[i].score or 0.0) - (1 - trade_off) * similarity

        pick = max(remaining, key=gain)
        chosen.append(pick)
        remaining.remove(pick)
    picked = [ranked[i] for i in chosen]
    return sorted(picked, key=lambda a: a.score or 0.0, reverse=True)

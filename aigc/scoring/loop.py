"""The feedback loop: generate candidates, score them, keep the best, and re-sample until a bar is met.

Re-sampling uses fresh seeds and moves the knobs the weakest part of the best candidate points at:
low novelty -> more temperature (text), less guidance (diffusion), less truncation (GAN);
low relevance -> less temperature, more guidance; low quality -> a little less temperature, more steps.
Every step is recorded, so the path that led to an asset can be read (and replayed) from its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..assets import Asset

# knob -> (factor or step when novelty is low, when relevance is low, when quality is low), and its bounds
NUDGES: dict[str, tuple[tuple[str, float], tuple[str, float], tuple[str, float], float, float]] = {
    "temperature": (("mul", 1.25), ("mul", 0.8), ("mul", 0.9), 0.05, 2.0),
    "guidance": (("add", -1.0), ("add", 1.5), ("add", 0.0), 1.0, 15.0),
    "truncation": (("add", 0.1), ("add", -0.1), ("add", -0.1), 0.3, 1.0),
    "steps": (("add", 0), ("add", 0), ("add", 10), 1, 100),
}
WEAKNESS = ("novelty", "relevance", "quality")


@dataclass
class Policy:
    n: int
    per_attempt: int
    min_score: float | None
    max_attempts: int
    diverse: bool


def nudge(knobs: dict[str, Any], scores: dict[str, Any], info: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The knobs for the next attempt, moved according to the weakest measured part."""
    measured = {part: scores[part] for part in WEAKNESS if scores.get(part) is not None}
    if not measured:
        return dict(knobs)
    weakest = WEAKNESS.index(min(measured, key=measured.get))
    moved = dict(knobs)
    for name, rule in NUDGES.items():
        if name not in knobs:
            continue
        current = knobs[name] if knobs[name] is not None else info.get(name, defaults.get(name))
        if current is None:
            continue
        how, amount = rule[weakest]
        value = current * amount if how == "mul" else current + amount
        value = min(max(value, rule[3]), rule[4])
        moved[name] = type(current)(round(value, 4)) if isinstance(current, float) else int(round(value))
    return moved


def search(produce: Callable[[list[int], dict[str, Any]], list[Asset]], judge: Callable[[list[Asset]], None],
           embed: Callable[[list[Asset]], np.ndarray], policy: Policy, first_seed: int, knobs: dict[str, Any],
           defaults: dict[str, Any]) -> list[Asset]:
    """Run the loop for one prompt and return the `n` chosen assets, best first."""
    pool: list[Asset] = []
    path: list[dict[str, Any]] = []
    for attempt in range(1, policy.max_attempts + 1):
        start = first_seed + (attempt - 1) * policy.per_attempt
        candidates = produce(list(range(start, start + policy.per_attempt)), knobs)
        judge(candidates)
        for asset in candidates:
            asset.attempts = attempt
        pool += candidates
        best = max(candidates, key=lambda a: a.score or 0.0)
        path.append({"attempt": attempt, "knobs": {k: knobs[k] for k in NUDGES if k in knobs},
                     "best_score": round(best.score or 0.0, 4)})
        cleared = [a for a in pool if policy.min_score is None or (a.score or 0.0) >= policy.min_score]
        if len(cleared) >= policy.n or attempt == policy.max_attempts:
            break
        knobs = nudge(knobs, best.scores, best.info, defaults)
    ranked = sorted(pool, key=lambda a: a.score or 0.0, reverse=True)
    if policy.min_score is not None:  # those that cleared the bar first, then the best of the rest
        ranked = [a for a in ranked if a.score >= policy.min_score] + [a for a in ranked if a.score < policy.min_score]
    chosen = select_diverse(ranked, embed(ranked), policy.n) if policy.diverse else ranked[: policy.n]
    for rank, asset in enumerate(chosen, 1):
        asset.rank, asset.candidates = rank, len(pool)
        asset.info["search"] = path
        if policy.min_score is not None:
            asset.info["met_min_score"] = (asset.score or 0.0) >= policy.min_score
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

"""Every candidate a best_of / min_score job judged, with its scores and whether it was kept: what the studio's
Judge view shows side by side. aigc.generate returns only the chosen assets, so the worker hands it a scorer
that notes each judgement on its way through (the scores are the scorer's own; nothing is re-computed)."""

from __future__ import annotations

from typing import Any

MAX_KEPT = 512  # candidates one job's record holds (a job's progress stays small)


class CandidateRecorder:
    """A scorer that delegates everything to the real one and remembers what score() said of each candidate."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer
        self._pending: list[dict[str, Any]] = []
        self.candidates: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)

    def score(self, items: Any, prompt: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        items = list(items)
        results = self._scorer.score(items, prompt, **kwargs)
        for item, result in zip(items, results, strict=True):
            self._pending.append(
                {
                    "seed": getattr(item, "seed", None),
                    "prompt": getattr(item, "prompt", prompt),
                    "score": result.get("score"),
                    "scores": {k: v for k, v in result.items() if k != "score"},
                }
            )
        return results

    def close_call(self, chosen: list[Any], positions: list[int]) -> list[dict[str, Any]]:
        """Mark which of this call's candidates were kept (and at which asset position); all of them so far."""
        kept = {(asset.prompt, asset.seed): position for asset, position in zip(chosen, positions, strict=True)}
        for candidate in self._pending:
            position = kept.get((candidate["prompt"], candidate["seed"]))
            candidate["kept"] = position is not None
            candidate["position"] = position
        self.candidates = (self.candidates + self._pending)[:MAX_KEPT]
        self._pending = []
        return self.candidates


def recorder_for(request: Any, executor: Any, manager: Any) -> CandidateRecorder | None:
    """A recorder for a job with the scorer's loop run in this process (a Ray actor keeps its own scorer)."""
    from .engines import LocalExecutor

    if (request.best_of is None and request.min_score is None) or not isinstance(executor, LocalExecutor):
        return None
    from ..scoring.scorer import default_scorer

    return CandidateRecorder(default_scorer(manager))

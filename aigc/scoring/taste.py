"""The team's taste: a preference model learned from people's ratings, on the embeddings the scorer computes.

One linear model per embedding space (and per user, when asked): thumbs are logistic regression on an item's
standardised embedding, choices are Bradley-Terry (logistic regression on the difference of the two items'
embeddings, no intercept), fitted together by scikit-learn with an L2 penalty chosen by cross-validation. Its
accuracy on held-out ratings is measured by cross-validation and tested against chance (a one-sided binomial
test); a model that does not beat chance is kept, reported, and not used. The fitted model is stored beside the
library as plain JSON numbers (never a pickle) with a fingerprint of the ratings file, and refitted when that
changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StorageError
from ..storage import slug, write_json
from .ratings import FILE as RATINGS_FILE
from .ratings import Rating, Ratings

MIN_RATINGS = 20  # ratings of one space before a taste model is fitted
MAX_RATINGS = 5000  # the latest ratings one model learns from (bounds the fit's time and memory)
CS = (0.003, 0.03, 0.3, 3.0)  # L2 strengths tried by the inner cross-validation (sklearn's C)
FOLDS = 5  # outer folds of the held-out accuracy
ALPHA = 0.05  # a model is used when its held-out accuracy beats chance at this level (one-sided binomial test)
FORMAT = "aigc-taste/1"

_lock = threading.Lock()
_cache: dict[tuple[str, str | None], _Fitted] = {}


@dataclass(frozen=True)
class HeldOut:
    """Cross-validated accuracy: each rating predicted by a model that never saw it."""

    n: int
    correct: int
    accuracy: float
    low: float  # 95% Wilson interval
    high: float
    chance: float  # what guessing gets: 0.5 for a choice, the majority share for thumbs
    p_value: float  # one-sided binomial test of accuracy > chance


@dataclass(frozen=True)
class TasteModel:
    """A fitted (or refused) taste for one embedding space: `score(vectors)` is P(liked) in [0, 1]."""

    space: str
    user: str | None
    thumbs: int
    pairs: int
    used: bool
    reason: str  # why it is used or not, in words
    held_out: HeldOut | None = None
    c: float | None = None
    mean: list[float] = field(default_factory=list, repr=False)
    scale: list[float] = field(default_factory=list, repr=False)
    coef: list[float] = field(default_factory=list, repr=False)
    intercept: float = 0.0

    @property
    def ratings(self) -> int:
        return self.thumbs + self.pairs

    @property
    def accuracy(self) -> float | None:
        return self.held_out.accuracy if self.held_out else None

    @property
    def dims(self) -> int:
        return len(self.coef)

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """The linear taste of each row (0 = as liked as an average rated item, for choices alone)."""
        standard = (np.asarray(vectors, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return standard @ np.asarray(self.coef) + self.intercept

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """P(liked) per row: the calibrated logistic of the linear taste."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(vectors), -50, 50)))


# --- fitting (pure: ratings in, a model out) --------------------------------------------------------------
def fit(ratings: list[Rating], space: str, user: str | None = None) -> TasteModel:
    """The taste model of `ratings` in `space` (ratings of other spaces, or widths, are left out)."""
    rows = _of_space(ratings, space)
    if len(rows) > MAX_RATINGS:
        rows = sorted(rows, key=lambda rating: rating.rated)[-MAX_RATINGS:]  # the latest
    thumbs = sum(r.type == "thumb" for r in rows)
    pairs = len(rows) - thumbs

    def refused(reason: str, held_out: HeldOut | None = None) -> TasteModel:
        return TasteModel(space, user, thumbs, pairs, False, reason, held_out)

    if len(rows) < MIN_RATINGS:
        return refused(f"too few ratings: {len(rows)} of the {MIN_RATINGS} a model needs")
    if not pairs and len({r.value for r in rows}) < 2:
        return refused(
            "every thumb points the same way, so there is nothing to tell apart; rate both ways or choose between pairs"
        )
    flips = np.random.default_rng(0).choice([-1, 1], size=len(rows))  # choices shown both ways round
    held_out, decisions, labels = _cross_validate(rows, flips)
    if held_out.p_value >= ALPHA:
        return refused(
            f"no better than chance: {held_out.correct}/{held_out.n} held-out ratings right "
            f"(chance {held_out.chance:.0%}, p = {held_out.p_value:.2g})",
            held_out,
        )
    slope = _calibration(decisions, labels)
    mean, scale = _standardiser(rows)
    weights, c = _fit_weights(_design(rows, flips, mean, scale))
    coef, intercept = weights[:-1] * slope, float(weights[-1] * slope) if thumbs else 0.0
    return TasteModel(
        space,
        user,
        thumbs,
        pairs,
        True,
        f"beats chance: {held_out.correct}/{held_out.n} held-out ratings right",
        held_out,
        c,
        mean.tolist(),
        scale.tolist(),
        coef.tolist(),
        intercept,
    )


def _of_space(ratings: list[Rating], space: str) -> list[Rating]:
    """The ratings of one space whose vectors share the width most of them have."""
    rows = [r for r in ratings if r.item.space == space and (r.other is None or r.other.space == space)]
    widths = [r.item.vector.size for r in rows]
    if not widths:
        return []
    width = max(set(widths), key=widths.count)
    return [r for r in rows if r.item.vector.size == width and (r.other is None or r.other.vector.size == width)]


def _standardiser(rows: list[Rating]) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.stack([v.vector for r in rows for v in (r.item, r.other) if v is not None]).astype(np.float64)
    scale = vectors.std(axis=0)
    return vectors.mean(axis=0), np.where(scale > 1e-8, scale, 1.0)


def _design(
    rows: list[Rating], flips: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One row per rating: a thumb is [x, 1] labelled up; a choice is [+-(a - b), 0] labelled by which way round
    it was shown. The last column is the thumbs' intercept, so choices have none (Bradley-Terry)."""
    features, labels = [], []
    for rating, flip in zip(rows, flips, strict=True):
        if rating.type == "thumb":
            features.append(np.append((rating.item.vector - mean) / scale, 1.0))
            labels.append(int(rating.value > 0))
        else:
            assert rating.other is not None  # a choice: its second item
            difference = (rating.item.vector.astype(np.float64) - rating.other.vector) / scale
            features.append(np.append(flip * difference, 0.0))
            labels.append(int(flip > 0))
    return np.stack(features), np.array(labels)


def _fit_weights(design: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float | None]:
    """L2 logistic regression without its own intercept; C chosen by an inner 3-fold cross-validation when both
    answers are common enough, else a middling fixed C. Returns the weights (None C: one answer only)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    features, labels = design
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:  # one answer only (a fold of thumbs all up): predict it
        weights = np.zeros(features.shape[1])
        weights[-1] = 1.0 if counts[1] else -1.0
        return weights, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the held-out accuracy is what counts
        if counts.min() >= 3:
            model = LogisticRegressionCV(
                Cs=list(CS),
                cv=StratifiedKFold(3, shuffle=True, random_state=0),
                fit_intercept=False,
                scoring="neg_log_loss",
                tol=1e-3,
                max_iter=500,
            ).fit(features, labels)
            c = float(np.ravel(model.C_)[0])
        else:
            c = 0.1
            model = LogisticRegression(C=c, fit_intercept=False, tol=1e-3, max_iter=500).fit(features, labels)
    return model.coef_[0].astype(np.float64), c


def _cross_validate(rows: list[Rating], flips: np.ndarray) -> tuple[HeldOut, np.ndarray, np.ndarray]:
    """Each rating predicted by a model fitted on the other folds (standardised on them too)."""
    from scipy.stats import binomtest
    from sklearn.model_selection import KFold

    decisions = np.zeros(len(rows))
    labels = np.zeros(len(rows), int)
    for train, test in KFold(min(FOLDS, len(rows)), shuffle=True, random_state=0).split(rows):
        mean, scale = _standardiser([rows[i] for i in train])
        weights, _ = _fit_weights(_design([rows[i] for i in train], flips[train], mean, scale))
        features, labels[test] = _design([rows[i] for i in test], flips[test], mean, scale)
        decisions[test] = features @ weights
    correct = int(np.sum((decisions > 0) == (labels == 1)))
    thumbs = [r.value > 0 for r in rows if r.type == "thumb"]
    majority = max(sum(thumbs), len(thumbs) - sum(thumbs))
    chance = (majority + 0.5 * (len(rows) - len(thumbs))) / len(rows)
    test = binomtest(correct, len(rows), chance, alternative="greater")
    interval = binomtest(correct, len(rows)).proportion_ci(0.95, method="wilson")
    held_out = HeldOut(
        len(rows),
        correct,
        correct / len(rows),
        float(interval.low),
        float(interval.high),
        round(chance, 4),
        float(test.pvalue),
    )
    return held_out, decisions, labels


def _calibration(decisions: np.ndarray, labels: np.ndarray) -> float:
    """The slope that turns held-out linear tastes into probabilities (Platt scaling, no offset): a model's
    0.9 then means it was right about 9 times in 10 on ratings it had not seen. Platt's smoothed targets
    ((N+ + 1) / (N+ + 2), 1 / (N- + 2)) keep a perfectly separated handful of ratings from claiming certainty."""
    from sklearn.linear_model import LogisticRegression

    if np.ptp(decisions) == 0:
        return 1.0
    ups, downs = int(labels.sum()), int(len(labels) - labels.sum())
    targets = np.where(labels == 1, (ups + 1) / (ups + 2), 1 / (downs + 2))
    features = np.concatenate([decisions, decisions]).reshape(-1, 1)
    answers = np.concatenate([np.ones(len(labels), int), np.zeros(len(labels), int)])
    model = LogisticRegression(C=1e4, fit_intercept=False).fit(
        features, answers, sample_weight=np.concatenate([targets, 1 - targets])
    )
    return max(float(model.coef_[0, 0]), 1e-6)


# --- stored beside the library, refitted when the ratings change ------------------------------------------
def model_path(directory: Path, space: str, user: str | None) -> Path:
    """taste-<space>[-<user>]-<hash>.json: readable, and distinct for spaces or users that slug alike."""
    digest = hashlib.sha256(json.dumps([space, user]).encode()).hexdigest()[:8]
    who = f"-{slug(user, 30, 'user')}" if user else ""
    return Path(directory) / f"taste-{slug(space, 40, 'space')}{who}-{digest}.json"


def taste(directory: Path, space: str, user: str | None = None) -> TasteModel | None:
    """The taste model of one space (None: nothing of that space was rated), refitted only when ratings.jsonl
    changed since it was stored."""
    return _models(Path(directory), user, only=space).get(space)


def tastes(directory: Path, user: str | None = None) -> list[TasteModel]:
    """A model (used or not, and why) for every space that has ratings, for `aigc taste`."""
    return list(_models(Path(directory), user).values())


@dataclass
class _Fitted:
    """What one process knows of a library's taste at one fingerprint of its ratings."""

    stamp: dict[str, Any]
    spaces: list[str] | None = None
    models: dict[str, TasteModel] = field(default_factory=dict)
    ratings: list[Rating] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _models(directory: Path, user: str | None, only: str | None = None) -> dict[str, TasteModel]:
    stamp = _fingerprint(directory)
    if stamp is None:
        return {}
    with _lock:
        entry = _cache.get((str(directory), user))
        if entry is None or entry.stamp != stamp:
            entry = _cache[(str(directory), user)] = _Fitted(stamp)
    with entry.lock:
        if entry.spaces is None:
            entry.ratings = Ratings(directory).all(user)
            entry.spaces = sorted({r.item.space for r in entry.ratings})
        wanted = [s for s in entry.spaces if only is None or s == only]
        for space in (s for s in wanted if s not in entry.models):
            model = _stored(directory, space, user, stamp)
            if model is None:
                if entry.ratings is None:
                    entry.ratings = Ratings(directory).all(user)
                model = fit(entry.ratings, space, user)
                _store(directory, model, stamp)
            entry.models[space] = model
        if len(entry.models) == len(entry.spaces):
            entry.ratings = None  # every space is fitted: the vectors need not stay in memory
        return {space: entry.models[space] for space in wanted}


def _fingerprint(directory: Path) -> dict[str, Any] | None:
    """What the stored model was fitted on: the ratings file's size and time (it is only ever appended to),
    and the rules of fitting."""
    try:
        stat = (directory / RATINGS_FILE).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "min_ratings": MIN_RATINGS,
        "max_ratings": MAX_RATINGS,
        "alpha": ALPHA,
        "format": FORMAT,
    }


def _store(directory: Path, model: TasteModel, stamp: dict[str, Any]) -> None:
    try:
        write_json(
            model_path(directory, model.space, model.user), {"format": FORMAT, "fingerprint": stamp, **asdict(model)}
        )
    except StorageError as error:  # a read-only library still scores with the model fitted in memory
        warnings.warn(f"aigc taste: the model is used but not stored ({error})", stacklevel=4)


def _stored(directory: Path, space: str, user: str | None, stamp: dict[str, Any]) -> TasteModel | None:
    """The stored model, if it was fitted on these very ratings and is whole; else None (it is refitted)."""
    path = model_path(directory, space, user)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("fingerprint") != stamp or raw.get("space") != space or raw.get("user") != user:
            return None
        held = raw.pop("held_out")
        for key in ("format", "fingerprint"):
            raw.pop(key)
        model = TasteModel(**raw, held_out=HeldOut(**held) if held is not None else None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    numbers = [*model.mean, *model.scale, *model.coef, model.intercept]
    whole = (
        len(model.mean) == len(model.scale) == len(model.coef)
        and all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers)
        and all(s > 0 for s in model.scale)
    )
    return model if whole and (not model.used or model.coef) else None

"""A latent prior for the GAN, learned from rated GAN images: where to draw latents so more faces are liked.

A GAN image's latent is its seed's (dcgan.latent(nz, seed), times its truncation), so a rating of a GAN asset
is a rating of a latent. A regularised logistic model (scikit-learn, cross-validated) learns the log-odds
"liked" as w·z + b; tilting the GAN's N(0, I) by those odds gives exactly N(w, I). The prior is that Gaussian:
a shift toward liked latents and away from disliked ones, capped so faces stay faces. Sampling maps each
seed's latent eps to mean + std * eps, so a seed still picks one image for a given prior.

Choices ("A over B") count A as liked and B as disliked here: a simplification a Bradley-Terry fit on the
latent differences would avoid, at the cost of another model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..media.latent_prior import FORMAT, Prior, read_prior

if TYPE_CHECKING:
    from ..scoring.ratings import Rated, Rating

MAX_SHIFT = 3.0  # the prior's mean stays within this distance of the origin (a 100-d latent's norm is ~10)
MIN_EACH = 4  # liked and disliked latents needed, at the least
CHANCE_MARGIN = 0.05  # held-out balanced accuracy must beat 0.5 by this much


@dataclass(frozen=True)
class RatedLatents:
    latents: np.ndarray  # [n, nz]
    liked: np.ndarray  # [n] bool
    skipped: int  # rated images whose latent cannot be recovered (not this GAN, refined, strips, no seed)
    model: str


def latents_from_ratings(ratings: Iterable[Rating], model: str | None = None) -> RatedLatents:
    """The latents of rated images this GAN made (default: the gan backend's model), each liked or not (a
    choice: its winner liked, its loser not)."""
    from ..runtime import models, registry

    model = model or str(registry.get("image", "gan").default_model)
    models.resolve(model)
    nz = _nz(model)
    rows: list[np.ndarray] = []
    liked: list[bool] = []
    skipped = 0
    for rating in ratings:
        sides = [(rating.item, rating.value > 0)] + ([(rating.other, False)] if rating.other is not None else [])
        for item, good in sides:
            if item.kind != "image":
                continue
            z = _latent(item, model, nz)
            if z is None:
                skipped += 1
                continue
            rows.append(z)
            liked.append(good)
    latents = np.stack(rows) if rows else np.zeros((0, nz), np.float32)
    return RatedLatents(latents, np.asarray(liked, bool), skipped, model)


def _latent(item: Rated, model: str, nz: int) -> np.ndarray | None:
    from ..generators.image.dcgan import latent
    from ..runtime import models

    origin = item.origin or {}
    params = origin.get("params") or {}
    seed = origin.get("seed")
    if origin.get("backend") != "gan" or not isinstance(seed, int) or isinstance(seed, bool):
        return None
    if params.get("refine") or params.get("frames") or not models.same_model(str(origin.get("model")), model):
        return None  # refined latents and strips are not their seed's latent
    z = latent(nz, seed)
    if params.get("prior"):
        try:
            z = read_prior(str(params["prior"])).apply(z)
        except ConfigError:
            return None  # made with a prior that is gone: its latent cannot be told
    return (z.reshape(-1) * float(params.get("truncation") or 1.0)).numpy().astype(np.float32)


def _nz(model: str) -> int:
    from ..generators.image.dcgan import build_dcgan, read_state_dict
    from ..runtime import models

    path = models.resolve(model).file
    return int(build_dcgan(read_state_dict(path), where=str(path)).nz)


def fit_prior(rated: RatedLatents, *, strength: float = 1.0, data: dict[str, Any] | None = None) -> Prior:
    """The tilted Gaussian N(strength * w, I) of a cross-validated logistic fit of liked on latent."""
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not 0 <= strength <= 10:
        raise ConfigError(f"--strength={strength!r} must be a number in [0, 10].", field="strength")
    good, bad = int(rated.liked.sum()), int((~rated.liked).sum())
    if min(good, bad) < MIN_EACH:
        raise ConfigError(
            f"the prior needs at least {MIN_EACH} liked and {MIN_EACH} disliked GAN images with their "
            f"seeds; found {good} liked and {bad} disliked ({rated.skipped} rated images skipped: not "
            f"{rated.model}, refined, strips, or rated without their record). Rate more.",
            field="from",
        )
    from sklearn.linear_model import LogisticRegressionCV

    folds = min(5, good, bad)
    # balanced: a team that likes few faces still says which way to lean; accuracy is balanced too (chance 0.5)
    fit = LogisticRegressionCV(
        Cs=np.logspace(-3, 1, 9), cv=folds, max_iter=2000, class_weight="balanced", scoring="balanced_accuracy"
    ).fit(rated.latents, rated.liked)
    accuracy = float(np.max(np.mean(fit.scores_[True], axis=0)))
    baseline = 0.5
    if accuracy <= CHANCE_MARGIN + baseline:
        raise ConfigError(
            f"the ratings cannot be told apart from the latents (held-out balanced accuracy "
            f"{accuracy:.2f}, chance is {baseline:.2f}); a prior would only add noise. Rate more "
            "images, or the team's taste is not in the GAN's latent.",
            field="from",
        )
    mean = strength * fit.coef_[0]
    shift = float(np.linalg.norm(mean))
    if shift > MAX_SHIFT:
        mean = mean * (MAX_SHIFT / shift)
        shift = MAX_SHIFT
    record = {
        "format": FORMAT,
        "version": 1,
        "model": rated.model,
        "liked": good,
        "disliked": bad,
        "skipped": rated.skipped,
        "accuracy": round(accuracy, 4),
        "baseline": round(baseline, 4),
        "C": float(fit.C_[0]),
        "strength": float(strength),
        "shift": round(shift, 4),
        "data": data or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    nz = rated.latents.shape[1]
    return Prior(mean.astype(np.float32), np.ones(nz, np.float32), record)

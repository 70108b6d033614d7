"""No-reference quality measures for the creativity scorer: cheap (numpy only), deterministic, all in [0, 1].

Every part is "higher = better" except `text_repetition()["repetition"]`, which is named for what it measures
(higher = more repetitive); its `quality` is the higher-is-better counterpart. The mappings are smooth saturating
curves or plateaus with linear shoulders, so a part never jumps and good-enough outputs are not split hairs over.

Images (analysed as luminance, resized so the longer side is 256 px, so a score hardly depends on resolution;
tiny images are upscaled, which honestly makes them look soft):

- `noise`: Immerkaer's 3x3 kernel (the difference of two Laplacians) annihilates flat areas, ramps and most of a
  straight edge; the median absolute value of its response (Donoho's MAD, /0.6745, /6 for the kernel's gain on
  white noise) estimates the noise sigma. The median, unlike a mean or variance, ignores the few pixels on
  edges, so sharp detail is not mistaken for noise. Mapped by 1 / (1 + (sigma / 0.02)^2): invisible noise
  (< 2/255) stays ~1, sigma 40/255 gives ~0.04-0.06 (clipping at 0 and 255 hides some of it).
- `sharpness`: the standard deviation of a 4-neighbour Laplacian (the usual focus measure), mapped by
  1 - exp(-s / 0.02): flat or blurred -> ~0, crisp edges saturate at ~1, an upscaled 64 px face ~0.25. Grain raises
  it too; the noise part, not this one, is what punishes grain. (Subtracting the estimated noise power was tried and
  dropped: fine texture inflates the estimate and then zeroes the sharpness of a crisp picture.)
- `exposure`: a plateau on mean luminance (1 for 0.3..0.7, down to 0 at 0 and 1) times a penalty on the fraction of
  clipped pixels (<= 0.01 or >= 0.99; free up to 5 %, 0 at 50 %), since a dark or bright picture can be deliberate
  but large burnt-out or crushed areas hold no information.
- `contrast`: the 2nd-98th percentile luminance spread (robust to a few stray pixels) through 1 - exp(-spread / 0.2);
  a flat field -> 0, a natural picture (~0.6+) -> ~0.95.
- `quality`: the weighted geometric mean of the four, so a single failure (flat, burnt out, buried in noise)
  drags the whole score down instead of being averaged away (the scorer's one mean, scoring/mean.py, which floors
  parts at 1e-4 inside the mean only, so that poor candidates are still ordered rather than all tying at 0).

Audio (mono float in [-1, 1]; integer samples are scaled by their type's range):

- `silence`: 1 - the fraction of 20 ms frames that are near-silent (RMS below -50 dBFS, or more than 40 dB under the
  loudest frame); an all-silent or empty clip is 0.
- `clipping`: exp(-f / 0.01) where f is the fraction of samples with |x| >= 0.999: a few peak touches cost little,
  1 % clipped costs ~60 %, audibly distorted audio (tens of %) is ~0. Clipping that was normalised down after the
  fact is not seen (no sample reaches 0.999).
- `level`: RMS of the non-silent frames (so pauses do not count twice) in dBFS: 1 within -30..-10 dBFS, falling
  linearly to 0 at -60 dBFS and at 0 dBFS (a full-scale square wave, i.e. crushed audio).
- `quality`: the weighted geometric mean of the three (floored as above); silence -> ~0.

Text: `distinct_n` = unique / total word n-grams (lower-cased word tokens; fewer than n tokens -> 1.0), the standard
diversity measure for generated text, which catches the loops that sampling falls into. `repetition` = 1 - their
mean. Note distinct-1 falls naturally with length (function words recur), so compare texts of similar length.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image

from .mean import weighted_geometric_mean

ANALYSIS_SIDE = 256
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_IMAGE_WEIGHTS = {"sharpness": 0.3, "exposure": 0.25, "noise": 0.25, "contrast": 0.2}
_AUDIO_WEIGHTS = {"silence": 0.35, "clipping": 0.35, "level": 0.3}
_FRAME_S = 0.020
_SILENT_DBFS = -50.0
_SILENT_BELOW_PEAK_DB = 40.0
_TOKEN = re.compile(r"\w+(?:'\w+)?")


def _unit(x: float) -> float:
    """A plain float clamped to [0, 1] (NaN -> 0), so callers never see a numpy scalar or a stray overshoot."""
    return 0.0 if not math.isfinite(x) else float(min(1.0, max(0.0, x)))


def _plateau(x: float, low: float, high: float, zero_low: float, zero_high: float) -> float:
    """1 on [low, high], linear down to 0 at zero_low and zero_high."""
    if x < low:
        return _unit((x - zero_low) / (low - zero_low))
    if x > high:
        return _unit((zero_high - x) / (zero_high - high))
    return 1.0


# ---------------------------------------------------------------- images


def _luminance(image: Image.Image) -> np.ndarray:
    """Float luminance in [0, 1] at the fixed analysis size (longer side ANALYSIS_SIDE)."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    grey = pixels @ _LUMA if pixels.ndim == 3 else pixels
    height, width = grey.shape
    scale = ANALYSIS_SIDE / max(height, width)
    size = (max(3, round(width * scale)), max(3, round(height * scale)))
    if size != (width, height):
        resized = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32), mode="F").resize(
            size, Image.Resampling.LANCZOS
        )
        grey = np.asarray(resized, dtype=np.float32)
    return np.clip(grey, 0.0, 1.0).astype(np.float64)


def _noise_sigma(grey: np.ndarray) -> float:
    """Noise sigma from the MAD of Immerkaer's residual (blind to flat areas, ramps and, via the median, edges)."""
    g = grey
    residual = (
        g[:-2, :-2]
        - 2 * g[:-2, 1:-1]
        + g[:-2, 2:]
        - 2 * g[1:-1, :-2]
        + 4 * g[1:-1, 1:-1]
        - 2 * g[1:-1, 2:]
        + g[2:, :-2]
        - 2 * g[2:, 1:-1]
        + g[2:, 2:]
    )
    return float(np.median(np.abs(residual))) / (0.6745 * 6.0)


def _laplacian_variance(grey: np.ndarray) -> float:
    g = grey
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(laplacian.var())


def image_quality(image: Image.Image) -> dict[str, float]:
    """Sharpness, exposure, noise and contrast of a picture, and their combined `quality`, each in [0, 1]."""
    grey = _luminance(image)
    sigma = _noise_sigma(grey)
    noise = 1.0 / (1.0 + (sigma / 0.02) ** 2)
    detail = math.sqrt(_laplacian_variance(grey))
    sharpness = 1.0 - math.exp(-detail / 0.02)
    mean = float(grey.mean())
    clipped = float(np.mean((grey <= 0.01) | (grey >= 0.99)))
    exposure = _plateau(mean, 0.3, 0.7, 0.0, 1.0) * _unit(1.0 - (clipped - 0.05) / 0.45)
    low, high = np.percentile(grey, [2, 98])
    contrast = 1.0 - math.exp(-float(high - low) / 0.2)
    parts = {
        "sharpness": _unit(sharpness),
        "exposure": _unit(exposure),
        "noise": _unit(noise),
        "contrast": _unit(contrast),
    }
    return {**parts, "quality": weighted_geometric_mean(parts, _IMAGE_WEIGHTS)}


# ---------------------------------------------------------------- audio


def _mono_float(samples: np.ndarray) -> np.ndarray:
    """Mono float64 in [-1, 1]-ish: integers scaled by their range, channels averaged (the shorter axis)."""
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples / float(np.iinfo(samples.dtype).max)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim > 1:
        samples = samples.mean(axis=0 if samples.shape[0] < samples.shape[-1] else -1)
    return np.nan_to_num(samples.reshape(-1))


def _db(power: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-20))


def audio_quality(samples: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Silence, clipping and loudness of a clip, and their combined `quality`, each in [0, 1]."""
    x = _mono_float(samples)
    if x.size == 0 or sample_rate <= 0:
        return {"silence": 0.0, "clipping": 1.0, "level": 0.0, "quality": 0.0}
    frame = max(1, int(round(_FRAME_S * sample_rate)))
    count = max(1, x.size // frame)
    frames = x[: count * frame].reshape(count, frame) if x.size >= frame else x.reshape(1, -1)
    power = np.mean(frames**2, axis=1)
    level_db = _db(power)
    silent = (level_db < _SILENT_DBFS) | (level_db < level_db.max() - _SILENT_BELOW_PEAK_DB)
    active = ~silent
    silence = 1.0 - float(silent.mean())
    clipped = float(np.mean(np.abs(x) >= 0.999))
    clipping = math.exp(-clipped / 0.01)
    if active.any():
        rms_db = float(_db(power[active].mean()))
        level = _plateau(rms_db, -30.0, -10.0, -60.0, 0.0)
    else:
        level = 0.0
    parts = {"silence": _unit(silence), "clipping": _unit(clipping), "level": _unit(level)}
    return {**parts, "quality": weighted_geometric_mean(parts, _AUDIO_WEIGHTS)}


# ---------------------------------------------------------------- text


def _distinct(tokens: list[str], n: int) -> float:
    if len(tokens) < n:
        return 1.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams)


def text_repetition(text: str) -> dict[str, float]:
    """distinct-1/2/3 over lower-cased word tokens, `repetition` = 1 - their mean, `quality` = their mean."""
    tokens = _TOKEN.findall(text.lower())
    parts = {f"distinct_{n}": _unit(_distinct(tokens, n)) for n in (1, 2, 3)}
    diversity = sum(parts.values()) / 3.0
    return {**parts, "repetition": _unit(1.0 - diversity), "quality": _unit(diversity)}

"""Audio clips: float32 mono samples in [-1, 1] with their sample rate, tidied the same way for every backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Audio:
    """What an audio Asset's `data` holds."""

    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def __repr__(self) -> str:
        return f"Audio({self.duration:.2f} s at {self.sample_rate} Hz)"


def tidy(samples: np.ndarray, sample_rate: int, *, threshold: float = 1e-3, margin_s: float = 0.05) -> Audio:
    """Mono float32, never clipped (peaks above 1 are scaled down, not cut), silence trimmed at both ends.

    A short margin is kept around the sound so that word onsets and tails are not cut off.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim > 1:
        samples = samples.mean(axis=0 if samples.shape[0] < samples.shape[-1] else -1)
    samples = np.nan_to_num(samples.reshape(-1))
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:
        samples = samples / peak
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size:
        margin = int(margin_s * sample_rate)
        samples = samples[max(loud[0] - margin, 0) : loud[-1] + margin + 1]
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), int(sample_rate))


def join(clips: list[np.ndarray], sample_rate: int, pause_s: float) -> np.ndarray:
    """Clips one after another with `pause_s` of silence between them."""
    gap = np.zeros(int(pause_s * sample_rate), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, clip in enumerate(clips):
        if i:
            parts.append(gap)
        parts.append(np.asarray(clip, dtype=np.float32).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

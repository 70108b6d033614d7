"""Embedders the scorer compares things with: sentence embeddings for text, a spectral fingerprint for audio.

Image features come from the classifier in `vision.py`; CLIP/CLAP (when present) from `clip.py`.
All embeddings are L2-normalised rows, so a dot product is a cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from ..media.audio import Audio
from ..runtime import models

DEFAULT_TEXT_EMBEDDER = "pack:minilm"


@dataclass
class _LoadedEmbedder:
    model: Any
    tokenizer: Any


class TextEmbedder:
    """all-MiniLM-L6-v2 (or any sentence-transformers-style encoder): mean-pooled, L2-normalised, 384-d."""

    def __init__(self, manager, model: str = DEFAULT_TEXT_EMBEDDER) -> None:
        self.manager = manager
        self.model = model
        self.source = models.resolve(model)
        self._cache: dict[str, np.ndarray] = {}

    def _load(self) -> _LoadedEmbedder:
        from transformers import AutoModel, AutoTokenizer

        target = self.source.load_target
        return _LoadedEmbedder(
            AutoModel.from_pretrained(target, use_safetensors=True).eval(), AutoTokenizer.from_pretrained(target)
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text; repeated texts (prompts, library labels) are embedded once per embedder."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            import torch

            key = self.manager.key("text-embedder", self.model, torch.float32)
            with self.manager.use(key, self._load) as loaded, torch.inference_mode():
                batch = loaded.tokenizer(missing, padding=True, truncation=True, max_length=256, return_tensors="pt")
                batch = batch.to(self.manager.device)
                hidden = loaded.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"][..., None].float()
                pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
            self._cache.update(zip(missing, pooled.cpu().numpy(), strict=True))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


def audio_fingerprint(audio: Audio, bands: int = 48) -> np.ndarray:
    """A cheap audio embedding: mean log energy in log-spaced frequency bands, centred and L2-normalised.

    Enough to tell a near-copy from a different sound when judging novelty; it says nothing about meaning.
    """
    x = audio.samples
    size = 1024
    if len(x) < size:
        x = np.pad(x, (0, size - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, size)[:: size // 2] * np.hanning(size)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(size, 1 / audio.sample_rate)
    edges = np.geomspace(40, audio.sample_rate / 2, bands + 1)
    energy = np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in pairwise(edges)])
    vector = np.log(energy + 1e-10)
    vector -= vector.mean()
    return (vector / (np.linalg.norm(vector) + 1e-12)).astype(np.float32)

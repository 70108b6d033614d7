"""Text-to-speech: Piper voices (the embedded default, via onnxruntime) and transformers VITS / MMS-TTS models.

Long text is split into sentences, each spoken on its own and joined with a pause. Every output draws its
noise from its own seeded generator, so a seed gives the same voice alone or among other outputs.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Sequence

import numpy as np

from .. import models
from ..audio import join, tidy
from ..errors import ConfigError, ModelLoadError
from .base import Generator, Output, Param

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_torch_rng_lock = threading.Lock()  # transformers' VITS samples from torch's global generator


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class SpeechGenerator(Generator):
    kind = "audio"
    family = "speech"
    params = {
        "speed": Param(1.0, "speaking rate: 2 is twice as fast", "float", 0.25, 4.0),
        "variation": Param(1.0, "how much the voice varies (scales the voice's noise); 0 is flat and steady",
                           "float", 0.0, 3.0),
        "pause": Param(0.3, "seconds of silence between sentences", "float", 0.0, 5.0),
    }

    def check_model(self) -> None:
        self.source = models.resolve(self.model)
        path = self.source.path
        if path is not None and path.is_file():
            if path.suffix != ".onnx":
                raise ModelLoadError(f"model={self.model!r}: a speech model file must be a Piper .onnx voice "
                                     "(with its .onnx.json beside it); other models load from a directory or Hub id.")
            self.engine = "piper"
        else:
            if path is not None and not (path / "config.json").exists():
                raise ModelLoadError(f"model={self.model!r}: {path} has no config.json; pass a transformers VITS "
                                     "directory (e.g. facebook/mms-tts-eng saved with save_pretrained) or a Piper .onnx.")
            self.engine = "vits"

    def load(self) -> Any:
        if self.engine == "piper":
            from .piper import load_voice

            return load_voice(self.source.path)
        from transformers import AutoTokenizer, VitsModel

        try:
            model = VitsModel.from_pretrained(self.source.load_target, dtype=self.dtype).eval()
            tokenizer = AutoTokenizer.from_pretrained(self.source.load_target)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} is not a loadable VITS model: {error}") from error
        return _Vits(model, tokenizer)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        units = [self._prepare(prompt) for prompt in prompts]  # fails on unspeakable text before loading
        with self.manager.use(self.cache_key, self.load) as engine:
            outputs = []
            for parts, seed in zip(units, seeds):
                rng = np.random.default_rng(seed)
                clips = [self._speak(engine, part, rng, seed, params) for part in parts]
                audio = tidy(join(clips, engine.sample_rate, params["pause"]), engine.sample_rate)
                outputs.append(Output(audio, {"sample_rate": audio.sample_rate, "seconds": round(audio.duration, 3),
                                              "sentences": len(parts), "engine": self.engine}))
        return outputs

    def _prepare(self, prompt: str) -> list[str]:
        """Sentences (as phonemes for Piper); an error if nothing in the text can be spoken."""
        parts = sentences(prompt)
        if self.engine == "piper":
            from .piper import phonemize

            parts = [phonemize(part) for part in parts]
        parts = [p for p in parts if any(ch.isalpha() for ch in p)]
        if not parts:
            raise ConfigError(f"prompt={prompt!r} has nothing speakable (no words); give the text to say.")
        return parts

    def _speak(self, engine: Any, part: str, rng: np.random.Generator, seed: int, params: dict[str, Any]) -> np.ndarray:
        if self.engine == "piper":
            return engine.speak(engine.ids(part), rng, params["speed"], params["variation"])
        return engine.speak(part, int(rng.integers(2**31)), params["speed"], params["variation"], self.manager.device)


class _Vits:
    """A transformers VITS model and its tokenizer, spoken one sentence at a time."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.sample_rate = int(model.config.sampling_rate)
        self.noise_scale = float(model.config.noise_scale)
        self.noise_scale_duration = float(model.config.noise_scale_duration)

    def speak(self, text: str, seed: int, speed: float, variation: float, device: Any) -> np.ndarray:
        import torch

        inputs = self.tokenizer(text, return_tensors="pt").to(device)
        if inputs["input_ids"].shape[-1] == 0:
            raise ConfigError(f"{text!r} has no characters this voice knows.")
        with _torch_rng_lock, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # the model samples from the global generator; fork_rng restores it after
            self.model.speaking_rate = speed
            self.model.noise_scale = self.noise_scale * variation
            self.model.noise_scale_duration = self.noise_scale_duration * variation
            with torch.inference_mode():
                waveform = self.model(**inputs).waveform
        return waveform[0].float().cpu().numpy()

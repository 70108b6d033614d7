"""Text-to-speech: Piper voices (the embedded default, via onnxruntime) and transformers VITS / MMS-TTS models.

Long text is split into sentences, each spoken on its own and joined with a pause. Every output draws its
noise from its own seeded generator, so a seed gives the same voice alone or among other outputs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError, ModelLoadError
from ...media.audio import join, tidy
from ...runtime import models
from ..base import Generator, Output, Param

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_torch_rng_lock = threading.Lock()  # transformers' VITS samples from torch's global generator


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class SpeechGenerator(Generator):
    kind = "audio"
    family = "speech"
    limits = {"prompt_chars": 10_000}  # ~10 minutes of speech; 100k characters took 9 minutes and 3.4 GB
    params = {
        "speed": Param(1.0, "speaking rate: 2 is twice as fast", "float", 0.25, 4.0),
        "variation": Param(
            1.0, "how much the voice varies (scales the voice's noise); 0 is flat and steady", "float", 0.0, 3.0
        ),
        "pause": Param(0.3, "seconds of silence between sentences", "float", 0.0, 5.0),
    }

    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        path = source.path
        if path is not None and path.is_file():
            if source.suffix != ".onnx":
                return (
                    "a speech model file must be a Piper .onnx voice (with its .onnx.json beside it); other "
                    "models load from a directory or Hub id."
                )
            from .piper import config_problem

            return config_problem(path)
        if path is not None and not (path / "config.json").exists():
            return (
                f"{path} has no config.json; pass a transformers VITS directory (e.g. facebook/mms-tts-eng saved "
                "with save_pretrained) or a Piper .onnx."
            )
        if models.pickled_weights(path):
            return models.pickled_weights(path)
        model_type = (source.json("config.json") or {}).get("model_type", "vits")
        if model_type != "vits":
            return (
                f"{path or source.ref} holds a {model_type!r} model, but the speech backend runs VITS voices "
                "(e.g. facebook/mms-tts-eng) and Piper .onnx voices."
            )
        return None

    @property
    def engine(self) -> str:
        return "piper" if self.source.suffix == ".onnx" else "vits"

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        for prompt in prompts:  # unspeakable text fails here, before the voice loads
            self._units(prompt)

    def load(self) -> Any:
        if self.engine == "piper":
            from .piper import load_voice

            return load_voice(self.source.file)
        from transformers import VitsModel

        try:
            model = VitsModel.from_pretrained(self.source.load_target, dtype=self.dtype, use_safetensors=True).eval()
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} is not a loadable VITS model: {error}") from error
        return _Vits(model, self._tokenizer())

    def preprocess(self, engine: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        return [(self._units(prompt), seed) for prompt, seed in zip(prompts, seeds, strict=True)]

    def forward(self, engine: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        outputs = []
        for parts, seed in items:
            rng = np.random.default_rng(seed)
            clips = [self._speak(engine, part, rng, params) for part in parts]
            audio = tidy(join(clips, engine.sample_rate, params["pause"]), engine.sample_rate)
            outputs.append(
                Output(
                    audio,
                    {
                        "sample_rate": audio.sample_rate,
                        "seconds": round(audio.duration, 3),
                        "sentences": len(parts),
                        "engine": self.engine,
                    },
                )
            )
        return outputs

    def _units(self, prompt: str) -> list[Any]:
        """What each sentence is spoken from: Piper's phoneme ids, or VITS's text; an error if nothing is speakable."""
        parts = sentences(prompt)
        if self.engine == "piper":
            from .piper import phonemize

            parts = [phonemize(part) for part in parts]
        parts = [p for p in parts if any(ch.isalpha() for ch in p)]
        if self.engine == "vits":
            tokenizer = self._tokenizer()
            parts = [p for p in parts if len(tokenizer(p)["input_ids"]) > 0]  # characters this voice knows
        if not parts:
            raise ConfigError(
                f"prompt={prompt!r} has nothing speakable (no words this voice knows); give the text to say.",
                field="prompt",
            )
        return parts

    def _tokenizer(self) -> Any:
        """The VITS voice's tokenizer (small files, no weights), read once per generator."""
        if getattr(self, "_vits_tokenizer", None) is None:
            from transformers import AutoTokenizer

            try:
                self._vits_tokenizer = AutoTokenizer.from_pretrained(self.source.load_target)
            except Exception as error:  # noqa: BLE001 - missing vocab files surface as TypeError, OSError...
                summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ModelLoadError(
                    f"model={self.model!r} has no loadable VITS tokenizer ({summary}); save the "
                    "tokenizer beside the model (tokenizer.save_pretrained(dir))."
                ) from None
        return self._vits_tokenizer

    def _speak(self, engine: Any, part: str, rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
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
        with _torch_rng_lock, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # the model samples from the global generator; fork_rng restores it after
            self.model.speaking_rate = speed
            self.model.noise_scale = self.noise_scale * variation
            self.model.noise_scale_duration = self.noise_scale_duration * variation
            with torch.inference_mode():
                waveform = self.model(**inputs).waveform
        return waveform[0].float().cpu().numpy()

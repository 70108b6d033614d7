"""Prompt relevance from contrastive models: CLIP for image-text pairs, CLAP for audio-text pairs.

Both embed the output and its prompt in one space and score the pair by cosine similarity, mapped to
[0, 1] as clip(2.5 * cos, 0, 1). Raw CLIP cosines are small: matching pairs sit around 0.25-0.35 and
unrelated ones around 0.1-0.2, so the factor 2.5 (CLIPScore's w=2.5, Hessel et al. 2021) spreads
them over the scale, with a good match near 0.75 and only very strong ones reaching 1. CLAP uses the
same mapping for one convention across modalities; it is not calibrated separately for CLAP.

Models load through the shared device manager in float32 whatever the manager's dtype: they are small,
and half precision would move scores that callers compare with thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelLoadError
from ..media.audio import Audio
from ..runtime import models

if TYPE_CHECKING:
    from transformers import ClapModel, ClapTextConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, PreTrainedModel

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_CLAP = "laion/clap-htsat-unfused"
SCALE = 2.5  # CLIPScore's w: maps typical CLIP cosines (0.25-0.35 for matches) onto most of [0, 1]
Model = TypeVar("Model", bound="PreTrainedModel")  # CLIPModel or ClapModel
# The casts below: transformers types a sub-config as what its config accepts (a dict, None or the config), but
# the config's constructor has built the sub-config by the time a model holds it.


def to_relevance(cosines: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarities -> [0, 1] relevance, clip(2.5 * cos, 0, 1) (see the module docstring)."""
    if isinstance(cosines, torch.Tensor):
        cosines = cosines.detach().float().cpu().numpy()
    return np.clip(np.asarray(cosines, dtype=np.float32) * SCALE, 0.0, 1.0)


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output holds the projected features; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class Loaded(Generic[Model]):
    """A contrastive model, its tokenizer, and what prepares its other input (CLIP's images, CLAP's audio)."""

    model: Model
    tokenizer: Any
    processor: Any


class _Relevance(Generic[Model]):
    """What CLIP and CLAP share: resolving the reference up front, availability, and the manager key."""

    family = ""
    batch_size = 32
    paired_with = ""  # what each text is paired with ("images", "audios"), for error messages

    def __init__(self, model_ref: str, manager) -> None:
        self.model_ref = model_ref
        self.manager = manager
        self.source = models.resolve(model_ref)  # cheap; raises ModelLoadError when absent offline
        path = self.source.path
        if path is not None and not (path.is_dir() and (path / "config.json").exists()):
            raise ModelLoadError(
                f"model={model_ref!r}: {path} is not a transformers model directory (config.json + weights); "
                f"save the {self.family.upper()} model and its processor there with save_pretrained."
            )

    @staticmethod
    def available(model_ref: str) -> bool:
        """True when the reference resolves to local files (a directory, or a Hub id already in the cache).

        Never downloads: an uncached Hub id is unavailable even when online, so scoring never stalls on a
        multi-hundred-megabyte download it was not asked for.
        """
        try:
            return models.resolve(model_ref).path is not None
        except ModelLoadError:
            return False

    @property
    def cache_key(self):
        return self.manager.key(self.family, self.model_ref, torch.float32)

    def load(self) -> Loaded[Model]:
        """The model (frozen, float32), its tokenizer and its processor, from the resolved reference."""
        from transformers import AutoTokenizer

        target = self.source.load_target
        try:
            model = self._model_class().from_pretrained(target, dtype=torch.float32, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(target)
            processor = self._processor(target)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model_ref!r} could not be loaded from {target}: {error}") from error
        return Loaded(model.eval().requires_grad_(False), tokenizer, processor)

    def _model_class(self) -> type[Model]:
        raise NotImplementedError

    def _processor(self, target: str) -> Any:
        raise NotImplementedError

    def _score(self, loaded: Loaded[Model], pairs: Sequence[tuple[Any, str]]) -> list[float]:
        """The raw cosine of each (thing, text) pair in one batch."""
        raise NotImplementedError

    def similarity(self, things: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        """Relevance in [0, 1] of each pair (things[i], texts[i]): pairwise, not a full matrix."""
        _check_pairs(things, texts, self.paired_with)
        if not things:
            return np.zeros(0, np.float32)
        with self.manager.use(self.cache_key, self.load) as loaded:
            rows = self.manager.run_batched(
                lambda chunk: self._score(loaded, chunk), list(zip(things, texts, strict=True)), self.batch_size
            )
        return to_relevance(np.asarray(rows, dtype=np.float32))

    def _tokens(self, tokenizer: Any, texts: Sequence[str], limit: int | None) -> dict[str, torch.Tensor]:
        """Token ids truncated to what the text tower reads, on the manager's device."""
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {k: v.to(self.manager.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


class ClipRelevance(_Relevance["CLIPModel"]):
    """Image-text relevance with a transformers CLIP (`CLIPModel`), from a Hub id or a saved directory."""

    family = "clip"
    paired_with = "images"

    def _model_class(self) -> type[CLIPModel]:
        from transformers import CLIPModel

        return CLIPModel

    def _processor(self, target: str) -> Any:
        return _clip_image_processor(target)

    @torch.inference_mode()
    def _score(self, clip: Loaded[CLIPModel], pairs: Sequence[tuple[Any, str]]) -> list[float]:
        pictures = [image.convert("RGB") for image, _ in pairs]
        pixels = clip.processor(images=pictures, return_tensors="pt")["pixel_values"]
        image_features = _pooled(clip.model.get_image_features(pixel_values=pixels.to(self.manager.device)))
        text_features = self._text_features(clip, [text for _, text in pairs])
        return F.cosine_similarity(image_features.float(), text_features, dim=-1).cpu().tolist()

    def _text_features(self, clip: Loaded[CLIPModel], texts: Sequence[str]) -> torch.Tensor:
        limit = cast("CLIPTextConfig", clip.model.config.text_config).max_position_embeddings
        return _pooled(clip.model.get_text_features(**self._tokens(clip.tokenizer, texts, limit))).float()

    def image_text_score(self, pixels: torch.Tensor, text: str) -> torch.Tensor:
        """Raw cosine of each image in `pixels` ([n, 3, H, W] in [-1, 1], any size) with `text`, differentiable.

        For gradient ascent on a generator's latent: the resize and normalisation are done in torch (the
        same shortest-edge resize and centre crop as the PIL path, bilinear with antialiasing), so the
        gradient reaches the pixels. The weights are frozen, so no gradient is spent on them.
        """
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ConfigError(f"pixels must be [n, 3, H, W] in [-1, 1]; got shape {tuple(pixels.shape)}.")
        with self.manager.use(self.cache_key, self.load) as clip:
            with torch.no_grad():
                text_features = self._text_features(clip, [text])
            x = _clip_input(pixels.to(self.manager.device, torch.float32), clip)
            image_features = _pooled(clip.model.get_image_features(pixel_values=x)).float()
        return F.cosine_similarity(image_features, text_features.expand_as(image_features), dim=-1)


class ClapRelevance(_Relevance["ClapModel"]):
    """Audio-text relevance with a transformers CLAP (`ClapModel`), from a Hub id or a saved directory."""

    family = "clap"
    batch_size = 8
    paired_with = "audios"

    def _model_class(self) -> type[ClapModel]:
        from transformers import ClapModel

        return ClapModel

    def _processor(self, target: str) -> Any:
        from transformers import ClapFeatureExtractor

        return ClapFeatureExtractor.from_pretrained(target)

    @torch.inference_mode()
    def _score(self, clap: Loaded[ClapModel], pairs: Sequence[tuple[Audio, str]]) -> list[float]:
        extractor = clap.processor
        rate = extractor.sampling_rate
        # Cut long clips to the model's window ourselves (the middle part): the extractor would crop at
        # random, and the same clip must always get the same score.
        waves = [
            _middle(resample(audio.samples, audio.sample_rate, rate), extractor.nb_max_samples) for audio, _ in pairs
        ]
        # an unfused model reads one mel channel; a "fusion" extractor config would hand it four
        fused = getattr(clap.model.config.audio_config, "enable_fusion", False)
        truncation = None if fused or extractor.truncation != "fusion" else "rand_trunc"
        inputs = extractor(waves, sampling_rate=rate, truncation=truncation, return_tensors="pt")
        # nothing is longer than the window now; the extractor may still flag one clip at random for fusion
        is_longer = torch.zeros((len(waves), 1), dtype=torch.bool, device=self.manager.device)
        audio_features = _pooled(
            clap.model.get_audio_features(
                input_features=inputs["input_features"].to(self.manager.device, torch.float32), is_longer=is_longer
            )
        )
        text_config = cast("ClapTextConfig", clap.model.config.text_config)
        limit = text_config.max_position_embeddings - 2  # RoBERTa positions start after padding
        limit = min(limit, clap.tokenizer.model_max_length)
        text_features = _pooled(
            clap.model.get_text_features(**self._tokens(clap.tokenizer, [t for _, t in pairs], limit))
        )
        return F.cosine_similarity(audio_features.float(), text_features.float(), dim=-1).cpu().tolist()


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear interpolation to `target` Hz (CLAP wants 48 kHz).

    Plain np.interp, with no anti-aliasing filter: up-sampling (the usual case, from 16-32 kHz speech and
    music) is exact enough, and the little aliasing when down-sampling barely moves a relevance score.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate == target or samples.size == 0:
        return samples
    count = max(1, round(samples.size * target / rate))
    times = np.arange(count) * (rate / target)
    return np.interp(times, np.arange(samples.size), samples).astype(np.float32)


def _middle(samples: np.ndarray, length: int) -> np.ndarray:
    if samples.size <= length:
        return samples if samples.size else np.zeros(1, np.float32)
    start = (samples.size - length) // 2
    return samples[start : start + length]


def _check_pairs(things: Sequence[Any], texts: Sequence[str], name: str) -> None:
    if len(things) != len(texts):
        raise ConfigError(f"{len(things)} {name} but {len(texts)} texts; relevance scores pairs, one text per item.")
    if any(not isinstance(t, str) for t in texts):
        raise ConfigError("texts must be strings (the prompts the outputs should match).")


def _clip_image_processor(target: str) -> Any:
    """CLIP's PIL/numpy image processor: the default one needs torchvision, which aigc does not install."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL/numpy one
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor.from_pretrained(target)
    return CLIPImageProcessorPil.from_pretrained(target)


def _clip_input(pixels: torch.Tensor, clip: Loaded[CLIPModel]) -> torch.Tensor:
    """[-1, 1] pixels -> CLIP's input: shortest edge resized, centre-cropped, normalised; differentiable."""
    processor, size = clip.processor, cast("CLIPVisionConfig", clip.model.config.vision_config).image_size
    assert isinstance(size, int), f"a CLIP's images are square (image_size={size!r})"
    crop = getattr(processor, "crop_size", None) or {}
    crop_h, crop_w = crop.get("height", size), crop.get("width", size)
    edge = (getattr(processor, "size", None) or {}).get("shortest_edge", min(crop_h, crop_w))
    height, width = pixels.shape[-2:]
    scale = edge / min(height, width)
    new_h, new_w = max(crop_h, round(height * scale)), max(crop_w, round(width * scale))
    x = (pixels + 1) / 2
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    x = x[..., top : top + crop_h, left : left + crop_w]
    mean = torch.tensor(processor.image_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std

"""CreativityScorer: creativity = value x novelty, measured per modality as parts in [0, 1].

- relevance: does it answer the prompt (text: sentence-embedding cosine; image: CLIP when present, else the
  classifier's top labels embedded and compared with the prompt; audio: CLAP when present, else not scored);
- novelty: distance from the other candidates, from the library of earlier assets, and (text) from the
  prompt's most obvious continuation (the language model's greedy answer);
- quality: text fluency (the language model's perplexity) and repetition; image sharpness, exposure,
  noise and contrast; audio silence, clipping and level.
- taste: with a library whose ratings taught a taste model that beats chance (scoring/taste.py), how much
  the team (or one user) would like it, P(liked) in [0, 1].
The score is the weighted geometric mean of the parts that could be measured, so a zero anywhere (an
irrelevant, a copied or a broken output) sinks it: value times novelty, not value plus novelty.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..media.assets import Asset
from ..media.audio import Audio
from ..progress import report as report_progress
from .embed import TextEmbedder, audio_fingerprint
from .mean import weighted_geometric_mean

PARTS = ("relevance", "novelty", "quality", "taste")
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_CLAP = "laion/clap-htsat-unfused"
DEFAULT_LM = "pack:smollm2"


@dataclass(frozen=True)
class Item:
    kind: str
    data: Any
    prompt: str | None


def as_item(thing: Any, prompt: str | None = None) -> Item:
    """An Asset, or raw data: str (text), PIL image, Audio or an (array, sample_rate) pair."""
    if isinstance(thing, Item):
        return thing if prompt is None else Item(thing.kind, thing.data, prompt)
    if isinstance(thing, Asset):
        return Item(thing.kind, thing.data, prompt if prompt is not None else thing.prompt)
    if isinstance(thing, str):
        return Item("text", thing, prompt)
    if isinstance(thing, Audio):
        return Item("audio", thing, prompt)
    if isinstance(thing, tuple) and len(thing) == 2 and isinstance(thing[1], int) and not isinstance(thing[1], bool):
        try:
            samples = np.asarray(thing[0], np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError("audio samples must be numbers (an array of floats in [-1, 1]).") from None
        return Item("audio", Audio(samples, thing[1]), prompt)
    if hasattr(thing, "convert") and hasattr(thing, "size"):
        return Item("image", thing.convert("RGB"), prompt)
    raise ConfigError(f"cannot score a {type(thing).__name__}; pass Assets, str, PIL images or (samples, rate).")


def checked_items(items: Any, prompt: str | None = None) -> list[Item]:
    """What aigc.score was given, as Items, refusing what has nothing to judge (generated candidates are not
    checked this way: an empty candidate is simply a poor one)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ConfigError(f"items must be a list of things to score, not a {type(items).__name__}; e.g. [text].")
    if not items:
        raise ConfigError("nothing to score: give at least one item.")
    return [_checked(as_item(thing, prompt)) for thing in items]


def _checked(item: Item) -> Item:
    """Refuse what has nothing to judge: empty text, a 0-pixel image, empty, silent-NaN or oddly sampled audio."""
    if item.kind == "text" and not item.data.strip():
        raise ConfigError("an empty text has nothing to score.")
    if item.kind == "image" and min(item.data.size) < 1:
        raise ConfigError(f"an image of {item.data.size[0]}x{item.data.size[1]} pixels has nothing to score.")
    if item.kind == "audio":
        rate, samples = item.data.sample_rate, item.data.samples
        if not isinstance(rate, int) or not 1000 <= rate <= 768_000:
            raise ConfigError(f"audio at {rate!r} Hz cannot be scored; sample rates run from 1,000 to 768,000 Hz.")
        if samples.size == 0 or not np.all(np.isfinite(samples)):
            raise ConfigError("audio to score needs at least one sample, and only finite ones (no NaN or inf).")
    return item


def vendi(vectors: np.ndarray) -> float:
    """Diversity of a set in [0, 1]: the Vendi score (effective number of distinct items), rescaled from [1, n]."""
    n = len(vectors)
    if n < 2:
        return 0.0
    kernel = np.clip(vectors @ vectors.T, 0, 1) / n
    eig = np.clip(np.linalg.eigvalsh(kernel), 1e-12, None)
    eig = eig / eig.sum()
    effective = math.exp(-float(np.sum(eig * np.log(eig))))
    return float(np.clip((effective - 1) / (n - 1), 0, 1))


def combine(parts: dict[str, float | None], weights: dict[str, float]) -> float:
    """The score: the weighted geometric mean of the measured parts (scoring/mean.py)."""
    return weighted_geometric_mean(
        {name: parts.get(name) for name in PARTS}, {name: weights.get(name, 1.0) for name in PARTS}
    )


def _check_weights(weights: Any) -> dict[str, float]:
    """Each part's weight: finite, >= 0, at least one above 0 (the defaults are 1 each)."""
    if weights is not None and not isinstance(weights, dict):
        raise ConfigError(f"weights={weights!r:.60} must be a dict of part -> weight, e.g. {{'novelty': 2}}.")
    merged = {name: 1.0 for name in PARTS} | dict(weights or {})
    bad = [
        k
        for k, w in merged.items()
        if k not in PARTS or isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0
    ]
    if bad or not any(merged[name] for name in PARTS if name != "taste"):
        raise ConfigError(
            f"weights={weights!r}: use finite numbers >= 0 for {', '.join(PARTS)}, at least one > 0 "
            "besides taste (taste is there only with enough ratings)."
        )
    return {k: float(w) for k, w in merged.items()}


class CreativityScorer:
    """Judges outputs for a prompt; its models load through the shared device manager like generators do."""

    def __init__(
        self,
        manager=None,
        *,
        weights: dict[str, float] | None = None,
        text_embedder: str = "pack:minilm",
        language_model: str | None = DEFAULT_LM,
        clip_model: str | None = DEFAULT_CLIP,
        clap_model: str | None = DEFAULT_CLAP,
    ) -> None:
        from ..runtime.devices import get_manager

        self.manager = manager or get_manager()
        self.weights = _check_weights(weights)
        self.text = TextEmbedder(self.manager, text_embedder)
        self.language_model = language_model
        self.clip_model, self.clap_model = clip_model, clap_model
        self._obvious: dict[str, str] = {}
        self._warned_no_lm = False
        self._lock = threading.Lock()

    # --- embeddings (novelty, diversity, the library) -------------------------------------------------
    def embed(self, items: Sequence[Any]) -> list[tuple[str, np.ndarray]]:
        """(space, vector) per item: the space names the embedder, so only like is compared with like."""
        items = [as_item(i) for i in items]
        out: list[tuple[str, np.ndarray] | None] = [None] * len(items)
        texts = [i for i, it in enumerate(items) if it.kind == "text"]
        if texts:
            for i, v in zip(texts, self.text.embed([items[i].data for i in texts]), strict=True):
                out[i] = (f"text:{self.text.model}", v)
        images = [i for i, it in enumerate(items) if it.kind == "image"]
        if images:
            _, features = self._classifier().predict([items[i].data for i in images])
            for i, v in zip(images, features, strict=True):
                out[i] = ("image:efficientnet-lite0", v)
        for i, it in enumerate(items):
            if it.kind == "audio":
                out[i] = ("audio:spectrum", audio_fingerprint(it.data))
        return out  # type: ignore[return-value]

    def diversity(self, items: Sequence[Any]) -> float:
        vectors = [v for _, v in self.embed(items)]
        return vendi(np.stack(vectors)) if vectors else 0.0

    # --- the score -------------------------------------------------------------------------------------
    def score(self, items: Sequence[Any], prompt: str | None = None, *, library=None) -> list[dict[str, float | None]]:
        """One dict per item: relevance, novelty, quality (and their sub-parts), taste when the library has a
        usable taste model (with `taste_accuracy` and `taste_ratings`, its held-out accuracy and rating count),
        and `score`."""
        items = [as_item(i, prompt) for i in items]
        if not items:
            return []
        kinds = {it.kind for it in items}
        if len(kinds) > 1:
            raise ConfigError(f"score items of one kind at a time, not a mix of {', '.join(sorted(kinds))}.")
        kind = kinds.pop()
        what = f"{len(items)} {kind}{'s' if len(items) > 1 and kind != 'audio' else ''}"
        report_progress("score", 0, 4, what)  # each of the 4 passes may first load its models (reported too)
        prompts = [it.prompt for it in items]
        embedded = self.embed(items)
        space = embedded[0][0]
        vectors = np.stack([v for _, v in embedded])
        results: list[dict[str, float | None]] = [{} for _ in items]
        parts_of = {"text": self._text_parts, "image": self._image_parts, "audio": self._audio_parts}
        report_progress("score", 1, 4, what)
        parts_of[kind](items, prompts, vectors, results)
        report_progress("score", 2, 4, what)
        self._novelty(vectors, space, library, results)
        report_progress("score", 3, 4, what)
        self._taste(vectors, space, library, results)
        for r in results:
            r["score"] = combine(r, self.weights)
        report_progress("score", 4, 4, what)
        return results

    def _novelty(self, vectors: np.ndarray, space: str, library, results: list[dict]) -> None:
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -1)
        stored = library.vectors(space) if library is not None and len(library) else np.zeros((0, 0))
        if stored.size and stored.shape[1] != vectors.shape[1]:  # written by another embedder under this name
            warnings.warn(
                f"aigc library: its {space} vectors are {stored.shape[1]}-d, not {vectors.shape[1]}-d; "
                "they are left out of novelty.",
                stacklevel=3,
            )
            stored = np.zeros((0, 0))
        for i, r in enumerate(results):
            if len(vectors) > 1:
                r["novelty.candidates"] = _distance(sims[i].max())
            if stored.size:
                r["novelty.library"] = _distance(float((stored @ vectors[i]).max()))
            subparts = [v for k, v in r.items() if k.startswith("novelty.") and v is not None]
            r["novelty"] = float(np.mean(subparts)) if subparts else None

    def _taste(self, vectors: np.ndarray, space: str, library, results: list[dict]) -> None:
        """The team's taste from the library's ratings: recorded only where something of this space was rated;
        None (left out of the score) while the model is missing, too young or no better than chance."""
        learned = getattr(library, "taste", None)
        model = learned(space) if learned is not None else None
        if model is None:
            return
        usable = model.used and model.dims == vectors.shape[1]
        if model.used and not usable:
            warnings.warn(
                f"aigc taste: the {space} model is {model.dims}-d, these vectors {vectors.shape[1]}-d; "
                "taste is left out.",
                stacklevel=3,
            )
        values = model.score(vectors) if usable else [None] * len(results)
        for r, value in zip(results, values, strict=True):
            r["taste"] = None if value is None else float(value)
            r["taste_accuracy"] = None if model.accuracy is None else round(model.accuracy, 4)
            r["taste_ratings"] = model.ratings

    def _text_parts(self, items, prompts, vectors, results) -> None:
        from .quality import text_repetition

        self._relevance_by_text(prompts, vectors, results)
        fluency = self._fluency([it.data for it in items])
        obvious = self._obvious_vectors(prompts)
        for i, r in enumerate(results):
            distinct = text_repetition(items[i].data)
            r["quality.distinct"] = float(
                np.mean([distinct["distinct_1"], distinct["distinct_2"], distinct["distinct_3"]])
            )
            if fluency is not None:
                r["quality.fluency"] = fluency[i]
            r["quality"] = float(np.mean([v for k, v in r.items() if k.startswith("quality.")]))
            if obvious is not None and obvious[i] is not None:
                r["novelty.obvious"] = _distance(float(obvious[i] @ vectors[i]))

    def _image_parts(self, items, prompts, vectors, results) -> None:
        from .quality import image_quality

        images = [it.data for it in items]
        clip = self._clip()
        if clip is not None and all(prompts):
            for r, value in zip(results, clip.similarity(images, prompts), strict=True):
                r["relevance"] = float(value)
        elif all(prompts):
            probs, _ = self._classifier().predict(images)
            self._relevance_by_labels(probs, prompts, results)
        for r, image in zip(results, images, strict=True):
            parts = image_quality(image)
            r.update({f"quality.{k}": v for k, v in parts.items() if k != "quality"})
            r["quality"] = parts["quality"]

    def _audio_parts(self, items, prompts, vectors, results) -> None:
        from .quality import audio_quality

        clap = self._clap()
        for r in results:
            r["relevance"] = None  # not scored without CLAP: said, not faked
        if clap is not None and all(prompts):
            for r, value in zip(results, clap.similarity([it.data for it in items], prompts), strict=True):
                r["relevance"] = float(value)
        for r, it in zip(results, items, strict=True):
            parts = audio_quality(it.data.samples, it.data.sample_rate)
            r.update({f"quality.{k}": v for k, v in parts.items() if k != "quality"})
            r["quality"] = parts["quality"]

    def image_objective(self):
        """objective(pixels, prompts): a differentiable relevance of images (a tensor in [-1, 1]) per prompt.

        What GAN refinement climbs: CLIP's image-text cosine when a CLIP is present; offline, the classifier's
        probabilities weighted by how close each ImageNet label is to the prompt (the offline relevance bridge).
        """
        import torch

        clip = self._clip()
        if clip is not None:

            def clip_objective(pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
                return torch.cat([clip.image_text_score(pixels[i : i + 1], p) for i, p in enumerate(prompts)])

            return clip_objective
        classifier = self._classifier()

        def label_objective(pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
            sims = self._label_similarities(prompts)  # labels unusually close to the prompt get the weight
            weights = np.clip((sims - sims.mean(axis=1, keepdims=True)) / sims.std(axis=1, keepdims=True), 0, None)
            weights /= np.maximum(weights.max(axis=1, keepdims=True), 1e-6)
            probs = classifier.probabilities(pixels)
            return (probs * torch.tensor(weights, dtype=probs.dtype, device=probs.device)).sum(dim=-1)

        return label_objective

    # --- relevance helpers --------------------------------------------------------------------------------
    def _relevance_by_text(self, prompts, vectors, results) -> None:
        if not all(prompts):
            return
        for r, p, v in zip(results, self.text.embed(prompts), vectors, strict=True):
            r["relevance"] = _relevance(float(p @ v))

    def _relevance_by_labels(self, probs: np.ndarray, prompts, results, top: int = 5) -> None:
        """Offline bridge: how much closer the image's top labels are to the prompt than labels in general.

        Raw cosines are not comparable between prompts (some prompts sit close to every label), so the
        probability-weighted similarity of the top labels is taken as a z-score against the prompt's
        similarity to all 1000 labels: z <= -1 maps to 0, z >= 4 to 1.
        """
        for r, row, sims in zip(results, probs, self._label_similarities(prompts), strict=True):
            best = np.argsort(row)[::-1][:top]
            weights = row[best] / row[best].sum()
            z = (float(weights @ sims[best]) - sims.mean()) / max(float(sims.std()), 1e-6)
            r["relevance"] = float(np.clip((z + 1) / 5, 0.0, 1.0))

    def _label_similarities(self, prompts: Sequence[str]) -> np.ndarray:
        """Cosine of each prompt with each of the 1000 ImageNet labels: [n, 1000]."""
        from .vision import imagenet_labels

        return self.text.embed(list(prompts)) @ self.text.embed(imagenet_labels()).T

    # --- models, loaded lazily through the shared manager ---------------------------------------------
    def _classifier(self):
        from .vision import ImageClassifier

        with self._lock:
            if not hasattr(self, "_image_classifier"):
                self._image_classifier = ImageClassifier(self.manager)
        return self._image_classifier

    def _clip(self):
        from .clip import ClipRelevance

        if self.clip_model and ClipRelevance.available(self.clip_model):
            return ClipRelevance(self.clip_model, self.manager)
        return None

    def _clap(self):
        from .clip import ClapRelevance

        if self.clap_model and ClapRelevance.available(self.clap_model):
            return ClapRelevance(self.clap_model, self.manager)
        return None

    def _language_model(self):
        from ..errors import ModelLoadError
        from ..generators.text.causal_lm import CausalLMGenerator

        if not self.language_model:
            return None
        try:
            return CausalLMGenerator(self.language_model, self.manager, backend="lm")
        except ModelLoadError as error:
            if not self._warned_no_lm:  # say once that two text parts go unmeasured, rather than hide it
                warnings.warn(
                    f"aigc scorer: no language model ({error}); text fluency and obvious-continuation "
                    "novelty are not measured. Pass language_model= or install the pack.",
                    stacklevel=3,
                )
                self._warned_no_lm = True
            return None

    def _fluency(self, texts: list[str]) -> list[float] | None:
        """Perplexity under the language model, mapped so fluent prose (ppl ~10-40) scores high."""
        import torch

        lm = self._language_model()
        if lm is None:
            return None
        values = []
        with lm.loaded() as loaded, torch.inference_mode():
            for text in texts:
                ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(self.manager.device)
                if ids.shape[-1] < 2:
                    values.append(0.0)
                    continue
                logits = loaded.model(input_ids=ids).logits[0, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
                values.append(_fluency(nll))
        return values

    def _obvious_vectors(self, prompts) -> list[np.ndarray | None] | None:
        """The prompt's most likely continuation (greedy), embedded: text close to it is unsurprising."""
        lm = self._language_model()
        if lm is None or not all(prompts):
            return None
        for prompt in set(prompts) - set(self._obvious):
            params = lm.check_params({"temperature": 0.0, "max_new_tokens": 32})
            self._obvious[prompt] = lm.generate([prompt], [0], **params)[0].data
        return list(self.text.embed([self._obvious[p] for p in prompts]))


def _distance(cosine: float) -> float:
    return float(np.clip(1.0 - cosine, 0.0, 1.0))


def _relevance(cosine: float) -> float:
    """MiniLM cosines: on-topic ~0.4-0.8, unrelated ~0; 0.6 and above counts as fully relevant."""
    return float(np.clip(cosine / 0.6, 0.0, 1.0))


def _fluency(nll: float) -> float:
    """Mean negative log-likelihood per token -> [0, 1]: nll <= 4.5 (ppl ~90) is 1, nll >= 7.5 (ppl ~1800) is 0.

    Calibrated on SmolLM2-135M scoring text without its prompt: fluent prose lands near nll 5 (0.8), the
    same words shuffled near 7.5 (0).
    """
    return float(np.clip((7.5 - nll) / 3.0, 0.0, 1.0))


_scorers_lock = threading.Lock()


def default_scorer(manager: Any = None) -> CreativityScorer:
    """The scorer on `manager` (default: the process-wide one, which devices.configure() may replace), made once
    per manager: its caches (the language model's obvious continuations) then serve every later call."""
    from ..runtime.devices import get_manager

    manager = manager or get_manager()
    with _scorers_lock:
        if "scorer" not in manager.shared:
            manager.shared["scorer"] = CreativityScorer(manager)
        return manager.shared["scorer"]

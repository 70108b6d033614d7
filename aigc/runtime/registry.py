"""Kind + backend name -> generator class. Built-ins are import strings, so nothing heavy loads until used.

Third-party packages add backends through the `aigc.generators` entry-point group, with the name
`<kind>.<backend>` and the value `module:Class` (a `Generator` subclass).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BackendNotFoundError, ConfigError, ModelLoadError, one_of

if TYPE_CHECKING:
    from .models import ModelSource

ENTRY_POINT_GROUP = "aigc.generators"


class GeneratorClass(Protocol):
    """A generator class as its callers use the class itself: what it declares, its class methods, and calling it
    for a generator. (The classes are aigc.generators.base.Generator subclasses; that layer sits above this one.)"""

    family: str
    params: dict[str, Any]  # knob name -> its Param
    limits: dict[str, int]
    per_output: tuple[str, ...]
    takes_prompt: bool

    def __call__(self, model: str, manager: Any, *, backend: str = ..., dtype: str | None = ...) -> Any: ...

    def check_params(self, given: dict[str, Any]) -> dict[str, Any]: ...

    def parse_knobs(self, given: dict[str, Any]) -> dict[str, Any]: ...

    def image_input(self) -> str | None: ...

    def model_fits(self, source: ModelSource) -> str | None: ...

    def picks_by_model(self) -> bool: ...


@dataclass(frozen=True)
class BackendSpec:
    kind: str
    name: str
    target: str  # "module:Class"
    default_model: str | None
    summary: str

    def load(self) -> GeneratorClass:
        """Import the generator class (this is where torch and friends get imported)."""
        module, _, attr = self.target.partition(":")
        try:
            return getattr(import_module(module), attr)
        except (ImportError, AttributeError) as error:
            raise BackendNotFoundError(
                f"backend {self.kind}/{self.name} could not be imported from {self.target!r}: {error}"
            ) from error


DEFAULT_DIFFUSION_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
BUILTINS = [
    BackendSpec(
        "text",
        "lm",
        "aigc.generators.text.causal_lm:CausalLMGenerator",
        "pack:smollm2",
        "any transformers causal LM; default: the SmolLM2-135M-Instruct pack (offline)",
    ),
    BackendSpec(
        "text",
        "gpt2",
        "aigc.generators.text.causal_lm:CausalLMGenerator",
        "openai-community/gpt2",
        "the GPT-2 family (Hub id or a local fine-tune)",
    ),
    BackendSpec(
        "image",
        "gan",
        "aigc.generators.image.gan:GANGenerator",
        "pack:gan-faces",
        "DCGAN faces from the gan-faces pack (offline, CPU; ignores the prompt)",
    ),
    BackendSpec(
        "image",
        "diffusion",
        "aigc.generators.image.diffusion:DiffusionGenerator",
        DEFAULT_DIFFUSION_MODEL,
        "Stable Diffusion 1.x/2.x/XL/Turbo through diffusers: text-to-image, image-to-image, inpainting and "
        "outpainting, ControlNet, image prompts (IP-Adapter), hires fix",
    ),
    BackendSpec(
        "image",
        "upscale",
        "aigc.generators.image.upscale:UpscaleGenerator",
        None,
        "upscale init_image: ESRGAN/Real-ESRGAN .pth/.safetensors files, or SD's x4/latent upscaler directories",
    ),
    BackendSpec(
        "audio",
        "speech",
        "aigc.generators.audio.speech:SpeechGenerator",
        "pack:piper-joe",
        "text-to-speech: the Piper voice pack (offline) or transformers VITS/MMS-TTS",
    ),
    BackendSpec(
        "audio",
        "music",
        "aigc.generators.audio.music:MusicGenerator",
        "facebook/musicgen-small",
        "text-to-music with transformers MusicGen",
    ),
]
DEFAULT_BACKEND = {"text": "lm", "audio": "speech"}


def default_backend(kind: str) -> str | None:
    """Images: Stable Diffusion when its weights are in the local Hub cache, else the offline GAN."""
    if kind == "image":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(DEFAULT_DIFFUSION_MODEL, "model_index.json")
        return "diffusion" if isinstance(cached, str) else "gan"
    return DEFAULT_BACKEND.get(kind)


def backends() -> dict[tuple[str, str], BackendSpec]:
    """Every registered backend: built-ins, then entry points (which may not shadow a built-in)."""
    found = {(spec.kind, spec.name): spec for spec in BUILTINS}
    for kind, name, value in _plugins(tuple(sys.path)):
        if name and (kind, name) not in found:
            found[(kind, name)] = BackendSpec(kind, name, value, None, f"plug-in from {value}")
    return found


@functools.lru_cache(maxsize=4)
def _plugins(search_path: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """The plug-in entry points, read once per sys.path (scanning every installed distribution costs ~5 ms,
    and a server checks each request against the registry)."""
    from importlib.metadata import entry_points

    return tuple((*entry.name.partition(".")[::2], entry.value) for entry in entry_points(group=ENTRY_POINT_GROUP))


def kinds() -> list[str]:
    """The kinds of output, in the order they were registered (built-ins: text, image, audio)."""
    return list(dict.fromkeys(kind for kind, _ in backends()))


def get(kind: str, backend: str | None = None, model: str | None = None) -> BackendSpec:
    """The backend for a request, or an error that lists the valid kinds or backends.

    Without `backend`, a given `model` decides it (read from the model's own files, without loading it);
    with neither, the kind's default.
    """
    registered = backends()
    valid_kinds = kinds()
    if not isinstance(kind, str) or kind not in valid_kinds:
        raise ConfigError(f"kind={kind!r} is not supported; use {one_of(sorted(valid_kinds))}.", field="kind")
    names = [name for k, name in registered if k == kind]
    if backend is None and model is not None:
        return pick(kind, model)
    if backend is None:
        backend = default_backend(kind) or names[0]
    if (kind, backend) not in registered:
        raise BackendNotFoundError(f"backend={backend!r} is not a {kind} backend; use {one_of(sorted(names))}.")
    return registered[(kind, backend)]


def pick(kind: str, model: str) -> BackendSpec:
    """The first backend of `kind` that runs `model`: the kind's default first, then the others in order.

    A model that fits none is an error naming every backend tried and why it does not fit.
    """
    from .models import resolve

    source = resolve(model)  # a missing model is missing for every backend: say so once
    candidates = [spec for (k, _), spec in backends().items() if k == kind]
    first = default_backend(kind)
    candidates.sort(key=lambda spec: spec.name != first)
    reasons: dict[str, list[str]] = {}  # why not -> the backends that said so (lm and gpt2 share a class)
    for spec in candidates:
        generator = spec.load()
        if not generator.picks_by_model():
            continue
        reason = generator.model_fits(source)
        if reason is None:
            return spec
        reasons.setdefault(reason, []).append(spec.name)
    tried = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
    raise ModelLoadError(
        f"model={model!r} fits no {kind} backend; tried {tried or 'none (no backend says which models it runs)'}"
    )


def check_model(spec: BackendSpec, model: str | None) -> None:
    """That `model` (or the backend's default) is there and is a model this backend runs; loads nothing."""
    from .models import resolve

    generator = spec.load()
    reference = model or spec.default_model
    if reference is None or not generator.picks_by_model():
        return
    reason = generator.model_fits(resolve(reference))
    if reason:
        raise ModelLoadError(f"model={reference!r}: {reason}")


def knobs() -> dict[str, list[tuple[BackendSpec, Any]]]:
    """Every knob name with the backends that declare it and their Params (what the CLI's options read)."""
    table: dict[str, list[tuple[BackendSpec, Any]]] = {}
    for spec in backends().values():
        for name, param in spec.load().params.items():
            table.setdefault(name, []).append((spec, param))
    return table

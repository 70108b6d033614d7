"""Kind + backend name -> generator class. Built-ins are import strings, so nothing heavy loads until used.

Third-party packages add backends through the `aigc.generators` entry-point group, with the name
`<kind>.<backend>` and the value `module:Class` (a `Generator` subclass).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from .errors import BackendNotFoundError, ConfigError, one_of

ENTRY_POINT_GROUP = "aigc.generators"


@dataclass(frozen=True)
class BackendSpec:
    kind: str
    name: str
    target: str  # "module:Class"
    default_model: str | None
    summary: str

    def load(self) -> type:
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
    BackendSpec("text", "lm", "aigc.generators.text:CausalLMGenerator", "pack:smollm2",
                "any transformers causal LM; default: the SmolLM2-135M-Instruct pack (offline)"),
    BackendSpec("text", "gpt2", "aigc.generators.text:CausalLMGenerator", "openai-community/gpt2",
                "the GPT-2 family (Hub id or a local fine-tune)"),
    BackendSpec("image", "gan", "aigc.generators.gan:GANGenerator", "pack:gan-faces",
                "DCGAN faces from the gan-faces pack (offline, CPU; ignores the prompt)"),
    BackendSpec("image", "diffusion", "aigc.generators.diffusion:DiffusionGenerator", DEFAULT_DIFFUSION_MODEL,
                "Stable Diffusion 1.x/2.x/XL/Turbo through diffusers: text-to-image and image-to-image"),
    BackendSpec("audio", "speech", "aigc.generators.speech:SpeechGenerator", "pack:piper-joe",
                "text-to-speech: the Piper voice pack (offline) or transformers VITS/MMS-TTS"),
    BackendSpec("audio", "music", "aigc.generators.music:MusicGenerator", "facebook/musicgen-small",
                "text-to-music with transformers MusicGen"),
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
    from importlib.metadata import entry_points

    found = {(spec.kind, spec.name): spec for spec in BUILTINS}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = entry.name.partition(".")
        if name and (kind, name) not in found:
            found[(kind, name)] = BackendSpec(kind, name, entry.value, None, f"plug-in from {entry.value}")
    return found


def kinds() -> list[str]:
    return sorted({kind for kind, _ in backends()})


def get(kind: str, backend: str | None = None) -> BackendSpec:
    """The backend for a request, or an error that lists the valid kinds or backends."""
    registered = backends()
    valid_kinds = sorted({k for k, _ in registered})
    if not isinstance(kind, str) or kind not in valid_kinds:
        raise ConfigError(f"kind={kind!r} is not supported; use {one_of(valid_kinds)}.")
    names = sorted(name for k, name in registered if k == kind)
    backend = backend or default_backend(kind) or names[0]
    if (kind, backend) not in registered:
        raise BackendNotFoundError(f"backend={backend!r} is not a {kind} backend; use {one_of(names)}.")
    return registered[(kind, backend)]

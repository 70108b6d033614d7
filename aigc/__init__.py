"""aigc: one call for AI-generated text, images and audio. `import aigc` stays light: torch loads on first use."""

from .api import generate, interpolate, score
from .assets import Asset, __version__, load
from .batch_runner import batch
from .errors import AIGCError, BackendNotFoundError, ConfigError, DeviceError, GenerationError, ModelLoadError
from .recipes import run
from .scoring.library import Library
from .workflows import Pipeline, Step, chain

__all__ = [
    "AIGCError", "Asset", "BackendNotFoundError", "ConfigError", "DeviceError", "GenerationError", "Library",
    "ModelLoadError", "Pipeline", "Step", "__version__", "batch", "chain", "generate", "interpolate", "load", "run",
    "score",
]


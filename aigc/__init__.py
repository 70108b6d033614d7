"""aigc: one call for AI-generated text, images and audio. `import aigc` stays light: torch loads on first use."""

from .api import generate, interpolate, score
from .assets import Asset, __version__, load
from .scoring.library import Library
from .errors import AIGCError, BackendNotFoundError, ConfigError, DeviceError, GenerationError, ModelLoadError

__all__ = [
    "AIGCError", "Asset", "BackendNotFoundError", "ConfigError", "DeviceError", "GenerationError",
    "Library", "ModelLoadError", "__version__", "generate", "interpolate", "load", "score",
]

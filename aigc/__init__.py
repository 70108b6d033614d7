"""aigc: one call for AI-generated text, images and audio. `import aigc` stays light: torch loads on first use."""

from . import limits
from .api import generate, interpolate, score
from .client import Client  # httpx loads when a Client is made
from .errors import (
    AIGCError,
    BackendNotFoundError,
    ConfigError,
    DeviceError,
    GenerationError,
    ModelLoadError,
    StorageError,
)
from .generators.controls import Control
from .media.assets import Asset, __version__, load
from .orchestration.batch_runner import batch
from .orchestration.recipes import run
from .orchestration.workflows import Pipeline, Step, chain
from .scoring.library import Library

__all__ = [
    "AIGCError",
    "Asset",
    "BackendNotFoundError",
    "Client",
    "ConfigError",
    "Control",
    "DeviceError",
    "GenerationError",
    "Library",
    "ModelLoadError",
    "Pipeline",
    "Step",
    "StorageError",
    "__version__",
    "batch",
    "chain",
    "generate",
    "interpolate",
    "limits",
    "load",
    "run",
    "score",
]

"""aigc: one call for AI-generated text, images and audio. `import aigc` stays light: torch loads on first use."""

from .api import generate, interpolate, score
from .assets import Asset, __version__, load
from .scoring.library import Library
from .workflows import Pipeline, Step, chain
from .batch_runner import batch
from .errors import AIGCError, BackendNotFoundError, ConfigError, DeviceError, GenerationError, ModelLoadError

__all__ = [
    "AIGCError", "Asset", "batch", "BackendNotFoundError", "ConfigError", "DeviceError", "GenerationError",
    "Library", "ModelLoadError", "Pipeline", "Step", "chain", "run", "__version__", "generate", "interpolate", "load", "score",
]


def run(recipe: str, out: str | None = None, *, seed: int = 0, **inputs: str):
    """Run a YAML recipe (`aigc.run("pipelines/story_to_poster.yaml", topic="a city of glass")`).

    Returns step name -> its assets; with `out`, also writes the run directory (assets, run.json, index.html).
    """
    from .recipes import load_recipe, run_to_dir
    from .workflows import run as run_pipeline

    pipeline = load_recipe(recipe)
    if out is None:
        return run_pipeline(pipeline, inputs, seed=seed)
    return run_to_dir(pipeline, inputs, out, seed=seed, source=str(recipe))

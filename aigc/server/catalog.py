"""What /v1/backends says: every kind and backend with its knobs as JSON Schema (from the backends' own
declarations, the same ones the CLI and recipes read), the models present (and which backend runs each of the
server's --models, and which of them are ControlNets), the packs, and the ControlNet preprocessors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .jobs import Places


def catalog(places: Places) -> dict[str, Any]:
    from ..runtime import registry
    from ..runtime.inventory import hub_models, pack_rows

    local = sorted(p.name for p in places.models.iterdir()) if places.models and places.models.is_dir() else []
    controlnets = [name for name in local if _is_controlnet(places.models, name)]
    runnable = [name for name in local if name not in controlnets]  # a ControlNet steers a model; it is never one
    kinds: dict[str, dict[str, Any]] = {}
    for (kind, name), spec in registry.backends().items():
        generator = spec.load()
        knobs = {
            knob: schema for knob, param in generator.params.items() if (schema := param.json_schema()) is not None
        }
        kinds.setdefault(kind, {"default": registry.default_backend(kind), "backends": {}})["backends"][name] = {
            "summary": spec.summary,
            "default_model": spec.default_model,
            "image_input": generator.image_input(),
            "knobs": {"type": "object", "properties": knobs, "additionalProperties": False},
            "models": _runs(generator, places.models, runnable),
        }
    pipelines = sorted(p.stem for p in places.pipelines.glob("*.yaml")) if places.pipelines else []
    return {
        "kinds": kinds,
        "models": {
            "local": local,
            "hub_cache": hub_models()["repos"],
            "packs": [
                {"model": ref, "kind": kind, "installed": installed == "yes", "summary": summary}
                for ref, kind, installed, _, summary, _ in pack_rows()
            ],
            "controlnets": controlnets,
        },
        "preprocessors": _preprocessors(),
        "pipelines": pipelines,
    }


def _runs(generator: Any, directory: Path | None, names: list[str]) -> list[str] | None:
    """The names in --models this backend runs (read from their small files, never their weights), or None for a
    backend that does not say which models it runs."""
    from ..errors import AIGCError
    from ..runtime.models import resolve

    if not generator.picks_by_model():
        return None
    if directory is None:
        return []
    fits: list[str] = []
    for name in names:
        try:
            if generator.model_fits(resolve(str(directory / name))) is None:
                fits.append(name)
        except (AIGCError, OSError, ValueError):  # unreadable: this backend cannot run it either
            continue
    return fits


def _is_controlnet(directory: Path | None, name: str) -> bool:
    """Whether --models' `name` is a ControlNet aigc loads (what a `control` entry's model names)."""
    from ..errors import AIGCError
    from ..generators.image.control import CLASSES
    from ..runtime.models import resolve

    if directory is None:
        return False
    try:
        config = resolve(str(directory / name)).json("config.json")
    except (AIGCError, OSError):
        return False
    return isinstance(config, dict) and config.get("_class_name") in CLASSES


def _preprocessors() -> dict[str, Any]:
    """Each ControlNet preprocessor (`control[].preprocess`) with its help and its options as JSON Schema."""
    from ..generators.image.control_maps import PREPROCESSORS

    return {
        name: {
            "help": spec.help,
            "options": {
                key: {
                    "type": "integer" if option.whole else "number",
                    "default": option.default,
                    "minimum": option.low,
                    "maximum": option.high,
                }
                for key, option in spec.options.items()
            },
        }
        for name, spec in PREPROCESSORS.items()
    }

"""What /v1/backends says: every kind and backend with its knobs as JSON Schema (from the backends' own
declarations, the same ones the CLI and recipes read), the models present, and the packs."""

from __future__ import annotations

from typing import Any

from .jobs import Places


def catalog(places: Places) -> dict[str, Any]:
    from ..runtime import registry
    from ..runtime.inventory import hub_models, pack_rows

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
        }
    local = sorted(p.name for p in places.models.iterdir()) if places.models and places.models.is_dir() else []
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
        },
        "pipelines": pipelines,
    }

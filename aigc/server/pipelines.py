"""GET /v1/pipelines/{name}: a server pipeline's inputs (with their defaults) and steps, so a client (the studio's
Chain view) can build the inputs form and show the chain before and while it runs."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from .auth import Principal
from .jobs import RunJob, model_reference, recipe_text
from .service import API, Service


def pipeline_view(service: Service, name: str) -> dict[str, Any]:
    from ..orchestration.recipes import parse_recipe

    text, where = recipe_text(RunJob(type="run", recipe=name), service.places)
    pipeline = parse_recipe(text, where, lambda value, field: model_reference(value, service.places, field))
    return {
        "name": name,
        "inputs": dict(pipeline.inputs),
        "steps": [
            {
                "name": s.name,
                "kind": s.kind,
                "prompt": s.prompt,
                "n": s.n,
                "backend": s.backend,
                "model": s.model,
                "input": s.input,
                "split": s.split,
                "refers_to": pipeline.references(s),
            }
            for s in pipeline.steps
        ],
    }


def pipeline_routes(app: FastAPI, service: Service) -> None:
    @app.get(f"{API}/pipelines/{{name}}")
    def get_pipeline(name: str, principal: Principal = Depends(service.who)) -> dict[str, Any]:
        return pipeline_view(service, name)

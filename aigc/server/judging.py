"""People's judgements over HTTP: thumbs and choices on assets, stored per user in the server's SQLite (to show
"my rating" at once) and in the team library's ratings (what novelty and tuning learn from); and what each part
of the score means (GET /v1/scoring)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from .auth import Principal
from .bodies import declared_body
from .service import API, Service, read_json, validated


class Thumb(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: StrictInt
    note: StrictStr | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    better: StrictStr
    worse: StrictStr
    note: StrictStr | None = None


def _library(service: Service) -> Any:
    from ..scoring.library import Library

    return Library(service.places.library)


def rate(service: Service, principal: Principal, asset_id: str, thumb: Thumb) -> dict[str, Any]:
    """Blocking (it embeds the asset): the library's line first (it checks value and note), then the SQLite row."""
    from ..media.assets import load
    from ..scoring.scorer import default_scorer

    row = service.readable_asset(asset_id, principal)
    asset = load(service.settings.data / row.path)
    rating = _library(service).rate(
        asset, thumb.value, user=principal.name, note=thumb.note, ref=asset_id, scorer=default_scorer(service.manager)
    )
    service.store.rate(asset_id, principal.name, thumb.value, rating.note)
    return ratings_of(service, principal, asset_id)


def ratings_of(service: Service, principal: Principal, asset_id: str) -> dict[str, Any]:
    service.readable_asset(asset_id, principal)
    every = service.store.ratings([asset_id])[asset_id]
    return {
        "asset": asset_id,
        "mine": next((r for r in every if r["user"] == principal.name), None),
        "up": sum(r["value"] > 0 for r in every),
        "down": sum(r["value"] < 0 for r in every),
        "all": every,
    }


def prefer(service: Service, principal: Principal, choice: Choice) -> dict[str, Any]:
    from ..media.assets import load
    from ..scoring.scorer import default_scorer

    better, worse = (service.readable_asset(i, principal) for i in (choice.better, choice.worse))
    items = [load(service.settings.data / row.path) for row in (better, worse)]
    rating = _library(service).prefer(
        *items,
        user=principal.name,
        note=choice.note,
        refs=(better.id, worse.id),
        scorer=default_scorer(service.manager),
    )
    return {"better": better.id, "worse": worse.id, "user": rating.user, "note": rating.note, "rated": rating.rated}


def scoring() -> dict[str, Any]:
    from ..scoring.meanings import MEANINGS
    from ..scoring.scorer import PARTS

    return {"parts": list(PARTS), "meanings": MEANINGS}


def judging_routes(app: FastAPI, service: Service) -> None:
    @app.put(f"{API}/assets/{{asset_id}}/rating", openapi_extra=declared_body(Thumb))
    async def put_rating(asset_id: str, request: Request, principal: Principal = Depends(service.who)) -> dict:
        thumb = validated(Thumb.model_validate, await read_json(request))
        return await asyncio.to_thread(rate, service, principal, asset_id, thumb)

    @app.get(f"{API}/assets/{{asset_id}}/rating")
    def get_rating(asset_id: str, principal: Principal = Depends(service.who)) -> dict:
        return ratings_of(service, principal, asset_id)

    @app.post(f"{API}/ratings/prefer", openapi_extra=declared_body(Choice))
    async def post_prefer(request: Request, principal: Principal = Depends(service.who)) -> dict:
        choice = validated(Choice.model_validate, await read_json(request))
        return await asyncio.to_thread(prefer, service, principal, choice)

    @app.get(f"{API}/scoring")
    def get_scoring(principal: Principal = Depends(service.who)) -> dict:
        return scoring()

"""`aigc serve`: the FastAPI app. Routes are a thin layer over the store (the source of truth), the runner (the
one worker) and aigc's own checks; every front end's rules apply unchanged over HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import TypeAdapter, ValidationError

from .. import errors
from .auth import Principal, Tokens
from .body import BodyLimit
from .jobs import JobRequest, Places
from .store import ACTIVE, Job, Store
from .validate import validated

API = "/v1"
_JOB = TypeAdapter(JobRequest)


@dataclass
class Settings:
    """What an operator chooses with `aigc serve`'s options."""

    data: Path
    tokens: Tokens = field(default_factory=Tokens)
    models: Path | None = None
    pipelines: Path | None = None
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1", "[::1]")
    cors_origins: tuple[str, ...] = ()
    max_body: int = 16 * 2**20
    queue_per_owner: int = 100
    run_worker: bool = True


def create_app(settings: Settings, manager: Any = None) -> FastAPI:
    """The app, its store under settings.data, and (while it runs) its worker."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from ..devices import get_manager
    from .metrics import Metrics
    from .runner import Runner

    settings.data.mkdir(parents=True, exist_ok=True)
    store = Store(settings.data / "aigc.db")
    places = Places(settings.models, settings.pipelines)
    places.library = settings.data / "library"  # type: ignore[attr-defined] - the team's library for best_of jobs
    manager = manager or get_manager()
    metrics = Metrics(store, manager)
    runner = Runner(store, settings.data, manager, places, on_seconds=metrics.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_worker:
            runner.start()
        yield
        if settings.run_worker:
            await asyncio.to_thread(runner.stop)
        store.close()

    app = FastAPI(title="aigc", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.store, app.state.runner, app.state.settings = store, runner, settings
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    _handlers(app)
    _routes(app, store, runner, settings, places, manager, metrics)
    return app


def _handlers(app: FastAPI) -> None:
    """aigc's errors as HTTP answers that name the field and the fix; never a 500 for a bad request."""

    @app.exception_handler(errors.AIGCError)
    async def aigc_error(request: Request, error: errors.AIGCError) -> JSONResponse:
        status = 507 if isinstance(error, errors.StorageError) else 422
        return _error(status, type(error).__name__, str(error), getattr(error, "field", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        return _error(422, "ConfigError", f"{where}: {first.get('msg')}", where or None)


def _error(status: int, kind: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, "field": field}}, status_code=status,
                        headers=headers)


def _routes(app: FastAPI, store: Store, runner: Any, settings: Settings, places: Places, manager: Any,
            metrics: Any) -> None:
    def who(authorization: str | None = Header(default=None)) -> Principal:
        principal = settings.tokens.who(authorization)
        if principal is None:
            raise HTTPException(401, "a bearer token is required: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal

    def own(job_id: str, principal: Principal) -> Job:
        job = store.get(job_id)
        if job is None or not (principal.admin or job.owner == principal.name):
            raise HTTPException(404, f"no job {job_id!r}")  # another user's job is not even said to exist
        return job

    @app.get("/health")
    def health() -> dict[str, Any]:
        counts = store.counts()
        return {"status": "ok", "version": _version(), "queue": counts["pending"] + counts["running"]}

    @app.post(f"{API}/jobs", status_code=202)
    async def post_job(request: Request, principal: Principal = Depends(who),
                       idempotency_key: str | None = Header(default=None)) -> JSONResponse:
        body = await _json(request)
        try:
            job_request = _JOB.validate_python({"type": "generate", **body} if isinstance(body, dict) else body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"][1:]) or None
            return _error(422, "ConfigError", f"{where or 'body'}: {first['msg']}", where)
        if store.pending_count(principal.name) >= settings.queue_per_owner:
            return _error(429, "QueueFull", f"you have {settings.queue_per_owner} jobs queued or running, the most one "
                          "user may; wait for some to finish.", headers={"Retry-After": "10"})
        stored, kind, expected = await asyncio.to_thread(validated, job_request, places, manager, store,
                                                         principal.name)
        key = idempotency_key[:200] if idempotency_key else None
        job, created = store.create(principal.name, job_request.type, kind, stored, expected, key)
        runner.nudge()
        return JSONResponse(_view(store, job, brief=True), status_code=202 if created else 200)

    @app.get(f"{API}/jobs")
    def list_jobs(principal: Principal = Depends(who), state: str | None = None, kind: str | None = None,
                  owner: str | None = None, limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0)) -> dict[str, Any]:
        owner = owner if principal.admin else principal.name
        jobs, total = store.list(owner=owner, state=state, kind=kind, limit=limit, offset=offset)
        return {"jobs": [_view(store, job, brief=True) for job in jobs], "total": total, "limit": limit,
                "offset": offset}

    @app.get(f"{API}/jobs/{{job_id}}")
    def get_job(job_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        return _view(store, own(job_id, principal))

    @app.post(f"{API}/jobs/{{job_id}}/cancel")
    def cancel_job(job_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        return _view(store, store.request_cancel(own(job_id, principal)))

    @app.post(f"{API}/jobs/{{job_id}}/retry")
    def retry_job(job_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        job = own(job_id, principal)
        if job.state not in ("failed", "cancelled"):
            raise HTTPException(409, f"job {job_id} is {job.state}; only a failed or cancelled job is retried.")
        job = store.retry(job)
        runner.nudge()
        return _view(store, job)

    @app.get(f"{API}/assets/{{asset_id}}")
    def get_asset(asset_id: str, principal: Principal = Depends(who),
                  if_none_match: str | None = Header(default=None)) -> Response:
        row = _own_asset(store, asset_id, principal)
        etag = f'"{row.etag}"'
        if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
            return Response(status_code=304, headers={"ETag": etag})  # the client's copy is this one
        return FileResponse(settings.data / row.path, media_type=row.media_type, headers={"ETag": etag},
                            filename=Path(row.path).name)

    @app.get(f"{API}/assets/{{asset_id}}/meta")
    def asset_meta(asset_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        row = _own_asset(store, asset_id, principal)
        return {"id": row.id, "job": row.job, "position": row.position, "kind": row.kind,
                "media_type": row.media_type, "size": row.size, "etag": row.etag, "record": row.record}

    @app.get(f"{API}/assets/{{asset_id}}/thumbnail")
    def thumbnail(asset_id: str, principal: Principal = Depends(who), size: int = Query(256, ge=16, le=1024)) -> Response:
        from .thumbnails import thumbnail_of

        row = _own_asset(store, asset_id, principal)
        if row.kind != "image":
            raise HTTPException(404, f"asset {asset_id} is {row.kind}; thumbnails are of images.")
        path = thumbnail_of(settings.data, row, size)
        return FileResponse(path, media_type="image/webp", headers={"ETag": f'"{row.etag}-{size}"'})

    @app.get(f"{API}/backends")
    def backends(principal: Principal = Depends(who)) -> dict[str, Any]:
        from .catalog import catalog

        return catalog(places)

    @app.get("/metrics")
    def prometheus(principal: Principal = Depends(who)) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get(f"{API}/jobs/{{job_id}}/events", response_class=EventSourceResponse)
    async def job_events(job_id: str, principal: Principal = Depends(who),
                         last_event_id: str | None = Header(default=None), after: int | None = None) -> AsyncIterator:
        own(job_id, principal)
        async for event in _stream(store, _after(last_event_id, after), job=job_id):
            yield event

    @app.get(f"{API}/events", response_class=EventSourceResponse)
    async def all_events(principal: Principal = Depends(who), last_event_id: str | None = Header(default=None),
                         after: int | None = None) -> AsyncIterator:
        async for event in _stream(store, _after(last_event_id, after),
                                   owner=None if principal.admin else principal.name):
            yield event


def _own_asset(store: Store, asset_id: str, principal: Principal) -> Any:
    row = store.asset(asset_id)
    job = store.get(row.job) if row else None
    if row is None or job is None or not (principal.admin or job.owner == principal.name):
        raise HTTPException(404, f"no asset {asset_id!r}")
    return row


def _after(header: str | None, query: int | None) -> int:
    """Where a (re)connecting event stream starts: after the Last-Event-ID it saw, or ?after=N."""
    if header is not None:
        try:
            return max(0, int(header))
        except ValueError:
            raise HTTPException(422, "Last-Event-ID must be the id of an earlier event (a whole number).") from None
    return max(0, query or 0)


async def _stream(store: Store, after: int, *, job: str | None = None,
                  owner: str | None = None) -> AsyncIterator[ServerSentEvent]:
    """Every event after `after`, as it happens; a job's stream ends once the job has ended. (FastAPI's SSE
    response sends its own keep-alive comments on an idle stream.)"""
    while True:
        events = await asyncio.to_thread(store.events_after, after, job=job, owner=owner)
        for event in events:
            after = event["id"]
            yield ServerSentEvent(data=event["data"], event=event["type"], id=str(event["id"]))
        if events:
            continue
        if job is not None:
            current = store.get(job)
            if current is None or current.state not in ACTIVE:
                return
        await asyncio.sleep(0.2)


def _view(store: Store, job: Job, brief: bool = False) -> dict[str, Any]:
    """A job as clients see it (the request as given, never a secret: requests hold none)."""
    view: dict[str, Any] = {
        "id": job.id, "owner": job.owner, "type": job.type, "kind": job.kind, "state": job.state,
        "position": store.position(job), "progress": job.progress, "expected": job.expected, "error": job.error,
        "created": job.created, "started": job.started, "finished": job.finished, "cancel_requested": job.cancel,
        "url": f"{API}/jobs/{job.id}", "events": f"{API}/jobs/{job.id}/events",
    }
    if not brief:
        view["request"] = job.request
        view["assets"] = [{"id": a.id, "position": a.position, "kind": a.kind, "media_type": a.media_type,
                           "url": f"{API}/assets/{a.id}", "meta": f"{API}/assets/{a.id}/meta",
                           "score": a.record.get("score"), "seed": a.record.get("seed")}
                          for a in store.assets_of(job.id)]
    return view


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):
        raise HTTPException(422, "the body must be a JSON object (Content-Type: application/json).") from None


def _version() -> str:
    from ..assets import __version__

    return __version__


def new_token() -> str:
    return secrets.token_urlsafe(24)

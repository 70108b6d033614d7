"""`aigc serve`: the FastAPI app. Routes are a thin layer over the store (the source of truth), the runner (the
one worker) and aigc's own checks; every front end's rules apply unchanged over HTTP."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .. import errors
from .auth import Principal, Signer
from .body import BodyLimit
from .jobs import Places
from .service import API, Service, Settings, error_response, read_json
from .store import ACTIVE, Store

__all__ = ["Settings", "create_app"]

def create_app(settings: Settings, manager: Any = None) -> FastAPI:
    """The app, its store under settings.data (held by this server alone while it runs), and its workers."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from ..devices import get_manager
    from .engines import executors, shut_down
    from .gallery import gallery_routes
    from .judging import judging_routes
    from .metrics import Metrics
    from .openai import openai_routes
    from .pipelines import pipeline_routes
    from .runner import Runner
    from .studio import studio_routes
    from .transfer import transfer_routes

    settings.data.mkdir(parents=True, exist_ok=True)
    lock = _hold(settings.data)
    store = Store(settings.data / "aigc.db")
    places = Places(settings.models, settings.pipelines)
    places.library = settings.data / "library"  # type: ignore[attr-defined] - the team's library for best_of jobs
    manager = manager or get_manager()
    metrics = Metrics(store, manager)
    service = Service(store, settings, places, manager, Signer(settings.data))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = executors(settings.engine, manager, settings.workers, settings.ray_address) if settings.run_worker \
            else []
        service.runners[:] = [Runner(store, settings.data, manager, places, executor=executor, name=f"worker-{i}",
                                     merge_outputs=settings.merge_outputs, on_seconds=metrics.observe,
                                     private=settings.private)
                              for i, executor in enumerate(pool)]
        for runner in service.runners:
            runner.start()
        yield
        await asyncio.gather(*(asyncio.to_thread(runner.stop) for runner in service.runners))
        shut_down(pool)
        store.close()
        lock.release()

    app = FastAPI(title="aigc", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service, app.state.store, app.state.settings = service, store, settings
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    _handlers(app)
    _routes(app, service, metrics)
    openai_routes(app, service)
    transfer_routes(app, service)
    gallery_routes(app, service)
    judging_routes(app, service)
    pipeline_routes(app, service)
    studio_routes(app)
    return app


def _hold(data: Path) -> Any:
    """One server per data directory: a second one on the same queue is refused at once."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(data / ".aigc-serve.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise errors.ConfigError(f"{data} is served by another aigc serve right now; stop it, or give this one "
                                 "another --data directory.") from None
    return lock


def _handlers(app: FastAPI) -> None:
    """Every error as one JSON shape that names the field and the fix (OpenAI's shape and types, with aigc's own
    type beside them: service.error_body); never a 500 for a bad request."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(errors.AIGCError)
    async def aigc_error(request: Request, error: errors.AIGCError) -> JSONResponse:
        status = 507 if isinstance(error, errors.StorageError) else 422
        return error_response(request, status, type(error).__name__, str(error), getattr(error, "field", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        return error_response(request, 422, "ConfigError", f"{where}: {first.get('msg')}", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # a Refusal (service.py) says its code, field and names; a plain HTTPException is named by its status
        return error_response(request, error.status_code, getattr(error, "aigc_type", None), str(error.detail),
                              getattr(error, "field", None), getattr(error, "headers", None),
                              code=getattr(error, "code", None), openai_type=getattr(error, "openai_type", None))


def _routes(app: FastAPI, service: Service, metrics: Any) -> None:
    store, settings, places, who, own = service.store, service.settings, service.places, service.who, service.own

    @app.get("/health")
    def health() -> dict[str, Any]:
        counts = store.counts()
        return {"status": "ok", "version": _version(), "queue": counts["pending"] + counts["running"]}

    @app.post(f"{API}/jobs", status_code=202)
    async def post_job(request: Request, principal: Principal = Depends(who),
                       idempotency_key: str | None = Header(default=None)) -> JSONResponse:
        job_request = service.parse(await read_json(request))
        job, created = await asyncio.to_thread(service.submit, principal, job_request, idempotency_key)
        return JSONResponse(service.view(job, brief=True), status_code=202 if created else 200)

    @app.get(f"{API}/jobs")
    def list_jobs(principal: Principal = Depends(who), state: str | None = None, kind: str | None = None,
                  owner: str | None = None, limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0)) -> dict[str, Any]:
        if owner is None and not principal.admin:
            owner = principal.name  # a user's queue: their own jobs, unless they ask for a teammate's
        elif not service.sees_all(principal):
            owner = principal.name  # --private: nobody else's
        last_event = store.last_event(owner)  # read before the jobs: a stream from here misses nothing after them
        jobs, total = store.list(owner=owner, state=state, kind=kind, limit=limit, offset=offset)
        return {"jobs": [service.view(job, brief=True) for job in jobs], "total": total, "limit": limit,
                "offset": offset, "last_event": last_event}

    @app.get(f"{API}/jobs/{{job_id}}")
    def get_job(job_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        return service.view(service.readable(job_id, principal))

    @app.post(f"{API}/jobs/{{job_id}}/cancel")
    def cancel_job(job_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        return service.view(store.request_cancel(own(job_id, principal)))

    @app.post(f"{API}/jobs/{{job_id}}/retry")
    def retry_job(job_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        job = own(job_id, principal)
        if job.state not in ("failed", "cancelled"):
            raise HTTPException(409, f"job {job_id} is {job.state}; only a failed or cancelled job is retried.")
        job = store.retry(job)
        service.nudge()
        return service.view(job)

    @app.get(f"{API}/assets/{{asset_id}}")
    def get_asset(asset_id: str, authorization: str | None = Header(default=None),
                  if_none_match: str | None = Header(default=None), format: str | None = Query(None, max_length=8),
                  expires: int | None = None, signature: str | None = Query(None, max_length=64)) -> Response:
        """An asset's file (one the bearer may see, or any with a signed link), or it converted: ?format=webp."""
        if service.signer.valid(asset_id, expires, signature):
            row = store.asset(asset_id)
            if row is None:
                raise HTTPException(404, f"no asset {asset_id!r}")
        else:
            row = service.readable_asset(asset_id, who(authorization))
        etag = f'"{row.etag}{"-" + format if format else ""}"'
        if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
            return Response(status_code=304, headers={"ETag": etag})  # the client's copy is this one
        if format is not None:
            from .. import formats
            from ..assets import load

            converted = load(settings.data / row.path).to_bytes(format)
            return Response(converted, media_type=formats.by_name(format).media_type, headers={"ETag": etag})
        return FileResponse(settings.data / row.path, media_type=row.media_type, headers={"ETag": etag},
                            filename=Path(row.path).name)

    @app.get(f"{API}/assets/{{asset_id}}/meta")
    def asset_meta(asset_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        row = service.readable_asset(asset_id, principal)
        signed = service.signer.query(row.id)
        return {"id": row.id, "job": row.job, "position": row.position, "kind": row.kind,
                "media_type": row.media_type, "size": row.size, "etag": row.etag, "record": row.record,
                "owner": store.get(row.job).owner, "src": f"{API}/assets/{row.id}?{signed}",
                "thumbnail": f"{API}/assets/{row.id}/thumbnail?{signed}" if row.kind == "image" else None,
                "ratings": store.ratings([row.id])[row.id]}

    @app.get(f"{API}/assets/{{asset_id}}/thumbnail")
    def thumbnail(asset_id: str, authorization: str | None = Header(default=None),
                  size: int = Query(256, ge=16, le=1024), expires: int | None = None,
                  signature: str | None = Query(None, max_length=64)) -> Response:
        """An image's thumbnail, of an image the bearer may see or any with a signed link (an <img> sends no token)."""
        from .thumbnails import thumbnail_of

        if service.signer.valid(asset_id, expires, signature) and store.asset(asset_id) is not None:
            row = store.asset(asset_id)
        else:
            row = service.readable_asset(asset_id, who(authorization))
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

    def visible_job(job_id: str, principal: Principal = Depends(who)) -> Any:
        """A dependency, so a job one may not see is a 404 before a stream's response has begun."""
        return service.readable(job_id, principal)

    @app.get(f"{API}/jobs/{{job_id}}/events", response_class=EventSourceResponse)
    async def job_events(job_id: str, job: Any = Depends(visible_job),
                         last_event_id: str | None = Header(default=None), after: int | None = None) -> AsyncIterator:
        async for event in _stream(store, _after(last_event_id, after), job=job_id):
            yield event

    @app.get(f"{API}/events", response_class=EventSourceResponse)
    async def all_events(principal: Principal = Depends(who), last_event_id: str | None = Header(default=None),
                         after: int | None = None) -> AsyncIterator:
        async for event in _stream(store, _after(last_event_id, after),
                                   owner=None if principal.admin else principal.name):
            yield event


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


def _version() -> str:
    from ..assets import __version__

    return __version__


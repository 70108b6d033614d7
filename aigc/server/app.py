"""`aigc serve`: the FastAPI app. Routes are a thin layer over the store (the source of truth), the runner (the
one worker) and aigc's own checks; every front end's rules apply unchanged over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .. import errors
from .auth import Principal, Signer
from .bodies import declared_body
from .body import BodyLimit, NoSniff, SameOriginWrites
from .jobs import JobRequest, Places
from .service import API, Service, Settings, error_response, read_json
from .store import ACTIVE, Busy, Store

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings, manager: Any = None) -> FastAPI:
    """The app, its store under settings.data (held by this server alone while it runs), and its workers."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from ..runtime.devices import get_manager
    from .control import control_routes
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
    _tidy(settings.data)
    store = Store(settings.data / "aigc.db", private=settings.private)
    places = Places(settings.models, settings.pipelines, settings.data / "library")
    manager = manager or get_manager()
    metrics = Metrics(store, manager)
    service = Service(store, settings, places, manager, Signer(settings.data))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = (
            executors(settings.engine, manager, settings.workers, settings.ray_address) if settings.run_worker else []
        )
        service.runners[:] = [
            Runner(
                store,
                settings.data,
                manager,
                places,
                executor=executor,
                name=f"worker-{i}",
                merge_outputs=settings.merge_outputs,
                on_seconds=metrics.observe,
                private=settings.private,
            )
            for i, executor in enumerate(pool)
        ]
        for runner in service.runners:
            runner.start()
        yield
        await asyncio.gather(*(asyncio.to_thread(runner.stop) for runner in service.runners))
        shut_down(pool)
        store.close()
        lock.release()

    # no Swagger or ReDoc page: they load a CDN's scripts on the studio's origin. The schema stays, behind tokens.
    app = FastAPI(title="aigc", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service, app.state.store, app.state.settings = service, store, settings

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(principal: Principal = Depends(service.who)) -> dict[str, Any]:
        return app.openapi()

    # outermost last: NoSniff marks every answer, BodyLimit, CORS, the Host check, then SameOriginWrites
    app.add_middleware(SameOriginWrites, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    app.add_middleware(NoSniff)
    _handlers(app)
    _routes(app, service, metrics)
    openai_routes(app, service)
    transfer_routes(app, service)
    gallery_routes(app, service)
    judging_routes(app, service)
    pipeline_routes(app, service)
    control_routes(app, service)
    studio_routes(app)
    return app


def _hold(data: Path) -> Any:
    """One server per data directory: a second one on the same queue is refused at once."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(data / ".aigc-serve.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise errors.ConfigError(
            f"{data} is served by another aigc serve right now; stop it, or give this one another --data directory."
        ) from None
    return lock


def _tidy(data: Path) -> None:
    """Remove the temporary files (`.NAME.RANDOM.part`) a killed server left mid-write where only the server writes:
    nothing is writing them now, as this server holds the data directory (_hold) and its workers have not started."""
    from ..storage import clean_partial

    clean_partial(data)
    for area in ("assets", "jobs", "thumbnails"):
        if (data / area).is_dir():
            clean_partial(data / area, recursive=True)


def _handlers(app: FastAPI) -> None:
    """Every error as one JSON shape that names the field and the fix (OpenAI's shape and types, with aigc's own
    type beside them: service.error_body); never a 500 for a bad request."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(errors.AIGCError)
    async def aigc_error(request: Request, error: errors.AIGCError) -> JSONResponse:
        status = 507 if isinstance(error, errors.StorageError) else 422
        return error_response(request, status, type(error).__name__, str(error), getattr(error, "field", None))

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Busy) -> JSONResponse:
        # another program holds the database: say so at once (store.REQUEST_WAIT_S), never a stall or a 500
        return error_response(request, 503, "Busy", str(error), headers={"Retry-After": "5"}, code="database_busy")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        return error_response(request, 422, "ConfigError", f"{where}: {first.get('msg')}", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # a Refusal (service.py) says its code, field and names; a plain HTTPException is named by its status
        return error_response(
            request,
            error.status_code,
            getattr(error, "aigc_type", None),
            str(error.detail),
            getattr(error, "field", None),
            getattr(error, "headers", None),
            code=getattr(error, "code", None),
            openai_type=getattr(error, "openai_type", None),
        )


def _routes(app: FastAPI, service: Service, metrics: Any) -> None:
    store, settings, places, who, own = service.store, service.settings, service.places, service.who, service.own

    @app.get("/health")
    def health() -> dict[str, Any]:
        counts = store.counts()
        return {"status": "ok", "version": _version(), "queue": counts["pending"] + counts["running"]}

    @app.post(f"{API}/jobs", status_code=202, openapi_extra=declared_body(JobRequest))
    async def post_job(
        request: Request, principal: Principal = Depends(who), idempotency_key: str | None = Header(default=None)
    ) -> JSONResponse:
        job_request = service.parse(await read_json(request))
        job, created = await asyncio.to_thread(service.submit, principal, job_request, idempotency_key)
        return JSONResponse(service.view(job, brief=True), status_code=202 if created else 200)

    @app.get(f"{API}/jobs")
    def list_jobs(
        principal: Principal = Depends(who),
        state: str | None = None,
        kind: str | None = None,
        owner: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        if owner is None and not principal.admin:
            owner = principal.name  # a user's queue: their own jobs, unless they ask for a teammate's
        elif not service.sees_all(principal) and owner != principal.name:
            raise HTTPException(
                403,
                f"owner={owner}: this server is private (aigc serve --private): you see your own "
                "jobs; an admin sees everyone's.",
            )
        last_event = store.last_event(owner)  # read before the jobs: a stream from here misses nothing after them
        jobs, total = store.list(owner=owner, state=state, kind=kind, limit=limit, offset=offset)
        return {
            "jobs": [service.view(job, brief=True) for job in jobs],
            "total": total,
            "limit": limit,
            "offset": offset,
            "last_event": last_event,
        }

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
    def get_asset(
        asset_id: str,
        authorization: str | None = Header(default=None),
        if_none_match: str | None = Header(default=None),
        format: str | None = Query(None, max_length=8),
        expires: int | None = None,
        signature: str | None = Query(None, max_length=64),
    ) -> Response:
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
            from ..media import formats
            from ..media.assets import load

            converted, chosen = load(settings.data / row.path).to_bytes(format), formats.by_name(format)
            name = Path(row.path).stem + chosen.suffix  # a type the client chose: a download, never a page
            return Response(
                converted,
                media_type=chosen.media_type,
                headers={"ETag": etag, "Content-Disposition": f'attachment; filename="{name}"'},
            )
        return FileResponse(
            settings.data / row.path,
            media_type=row.media_type,
            headers={"ETag": etag},
            filename=Path(row.path).name,
            content_disposition_type=_disposition(row.media_type),
        )

    @app.get(f"{API}/assets/{{asset_id}}/meta")
    def asset_meta(asset_id: str, principal: Principal = Depends(who)) -> dict[str, Any]:
        row = service.readable_asset(asset_id, principal)
        job = store.get(row.job)
        assert job is not None  # readable_asset found it
        signed = service.signer.query(row.id)
        return {
            "id": row.id,
            "job": row.job,
            "position": row.position,
            "kind": row.kind,
            "media_type": row.media_type,
            "size": row.size,
            "etag": row.etag,
            "record": row.record,
            "owner": job.owner,
            "src": f"{API}/assets/{row.id}?{signed}",
            "thumbnail": f"{API}/assets/{row.id}/thumbnail?{signed}" if row.kind == "image" else None,
            "ratings": store.ratings([row.id])[row.id],
        }

    @app.get(f"{API}/assets/{{asset_id}}/thumbnail")
    def thumbnail(
        asset_id: str,
        authorization: str | None = Header(default=None),
        size: int = Query(256, ge=16, le=1024),
        expires: int | None = None,
        signature: str | None = Query(None, max_length=64),
    ) -> Response:
        """An image's thumbnail, of an image the bearer may see or any with a signed link (an <img> sends no token)."""
        from .thumbnails import thumbnail_of

        signed = store.asset(asset_id) if service.signer.valid(asset_id, expires, signature) else None
        row = signed if signed is not None else service.readable_asset(asset_id, who(authorization))
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
    async def job_events(
        job_id: str, job: Any = Depends(visible_job), after: int = Depends(_after)
    ) -> AsyncIterator[Any]:
        async for event in _stream(store, after, job=job_id):
            yield event

    @app.get(f"{API}/events", response_class=EventSourceResponse)
    async def all_events(principal: Principal = Depends(who), after: int = Depends(_after)) -> AsyncIterator[Any]:
        async for event in _stream(store, after, owner=None if principal.admin else principal.name):
            yield event


def _disposition(media_type: str) -> str:
    """How an asset's file is answered: inline for what a page shows with <img> or <audio> (an SVG excepted: it
    holds script), else as an attachment, so a text a user typed is never opened as a page of this origin."""
    kind = media_type.split(";", 1)[0].strip().lower()
    return "inline" if kind.startswith(("image/", "audio/")) and kind != "image/svg+xml" else "attachment"


LAST_EVENT = 2**63 - 1  # the largest event id SQLite stores; a larger number is read as this one


def _after(last_event_id: str | None = Header(default=None), after: int | None = None) -> int:
    """Where a (re)connecting event stream starts: after the Last-Event-ID it saw, or ?after=N. A dependency, so a
    bad one is a 422 before the stream's response has begun (never a stream cut short); ASCII digits only."""
    if last_event_id is not None:
        text = last_event_id.strip()
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
            raise HTTPException(422, "Last-Event-ID must be the id of an earlier event (a whole number).")
        return min(max(0, int(text)), LAST_EVENT)
    return min(max(0, after or 0), LAST_EVENT)


async def _stream(
    store: Store, after: int, *, job: str | None = None, owner: str | None = None
) -> AsyncIterator[ServerSentEvent]:
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
    from ..media.assets import __version__

    return __version__

"""What every HTTP front end of the server shares (aigc's own /v1/jobs, the OpenAI-compatible layer, the studio):
who is asking, submitting a job through the same checks, waiting for it, and how a job looks to a client."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from ..errors import ConfigError
from .auth import Principal, Signer, Tokens
from .jobs import JobRequest, Places
from .store import ACTIVE, AssetRow, Job, KeyReused, QueueLimit, Store

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
    merge_outputs: int = 16  # outputs one merged generator call may hold; 1 = every job alone
    engine: str = "local"  # or "ray": generation on Ray actors
    workers: int | None = None  # Ray actors (default: one per GPU, else 2)
    ray_address: str | None = None
    run_worker: bool = True
    private: bool = False  # --private: each user reads only their own jobs and assets (admins: all)


class Refusal(HTTPException):
    """An HTTP refusal that says more than its status: OpenAI's `code`, the field at fault, aigc's own name for it,
    and OpenAI's category where it is not the status's (OpenAI answers an unknown model with a 404 whose type is
    invalid_request_error). The exception handler turns it into the one error shape (error_body)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        aigc_type: str | None = None,
        openai_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code, self.field, self.aigc_type, self.openai_type = code, field, aigc_type, openai_type


class QueueFull(Refusal):
    def __init__(self, limit: int) -> None:
        super().__init__(
            429,
            f"you have {limit} jobs queued or running, the most one user may; wait for some to finish.",
            code="rate_limit_exceeded",
            aigc_type="QueueFull",
            headers={"Retry-After": "10"},
        )


@dataclass
class Service:
    store: Store
    settings: Settings
    places: Places
    manager: Any
    signer: Signer
    runners: list[Any] = field(default_factory=list)

    def who(self, authorization: str | None = Header(default=None)) -> Principal:
        """The caller (a FastAPI dependency): the user the bearer token names; 401 without a valid one."""
        principal = self.settings.tokens.who(authorization)
        if principal is None:
            raise HTTPException(
                401, "a bearer token is required: Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
            )
        return principal

    def sees_all(self, principal: Principal) -> bool:
        """Whether `principal` reads everyone's jobs and assets: everyone does on a team server (the default, so
        the gallery is the team's); with --private only an admin does."""
        return principal.admin or not self.settings.private

    def readable(self, job_id: str, principal: Principal) -> Job:
        """A job the caller may look at (its state, assets, events); 404 for any other."""
        job = self.store.get(job_id)
        if job is None or not (self.sees_all(principal) or job.owner == principal.name):
            raise HTTPException(404, f"no job {job_id!r}")  # a job one may not see is not even said to exist
        return job

    def own(self, job_id: str, principal: Principal) -> Job:
        """A job the caller may change (cancel, retry): their own, or anyone's for an admin."""
        job = self.readable(job_id, principal)
        if not (principal.admin or job.owner == principal.name):
            raise HTTPException(403, f"job {job_id} is {job.owner}'s; only its owner or an admin may change it.")
        return job

    def readable_asset(self, asset_id: str, principal: Principal) -> AssetRow:
        """An asset row the caller may look at (and rate, zip, score, use as an input); 404 for any other."""
        row = self.store.asset(asset_id)
        job = self.store.get(row.job) if row else None
        if row is None or job is None or not (self.sees_all(principal) or job.owner == principal.name):
            raise HTTPException(404, f"no asset {asset_id!r}")
        return row

    @staticmethod
    def parse(body: Any) -> Any:
        """A request body as a job request (a bare object is a generate job); a ConfigError naming the field."""
        return validated(
            _JOB.validate_python, {"type": "generate", **body} if isinstance(body, dict) else body, skip=1
        )  # the first location part is the job type's tag

    def submit(self, principal: Principal, request: Any, idempotency: str | None = None) -> tuple[Job, bool]:
        """Check a job request the way the Python API does, queue it, wake a worker; (job, created).

        Blocking (it may read an input image): call it from a thread in async code."""
        from .runner import merge_key
        from .validate import validated

        if self.store.pending_count(principal.name) >= self.settings.queue_per_owner:
            raise QueueFull(self.settings.queue_per_owner)
        inputs_of = None if self.sees_all(principal) else principal.name  # whose images it may take as an input
        stored, kind, expected = validated(request, self.places, self.manager, self.store, inputs_of)
        key = (
            merge_key(request, self.places) if request.type == "generate" and self.settings.merge_outputs > 1 else None
        )
        idempotency = idempotency[:200] if idempotency else None
        try:  # the limit is checked again in the transaction that queues the job: concurrent POSTs cannot overshoot it
            job, created = self.store.create(
                principal.name,
                request.type,
                kind,
                stored,
                expected,
                idempotency,
                merge_key=key,
                limit=self.settings.queue_per_owner,
                fingerprint=fingerprint(request),
            )
        except QueueLimit as full:
            raise QueueFull(full.limit) from None
        except KeyReused as reused:
            raise Refusal(
                409,
                f"Idempotency-Key {idempotency!r} was used for another request (job {reused}); the same "
                "key returns the same job only for the same request: send a new key for a new one.",
                code="idempotency_key_reused",
                field="Idempotency-Key",
            ) from None
        self.nudge()
        return job, created

    def nudge(self) -> None:
        for runner in self.runners:
            runner.nudge()

    async def finished(self, job_id: str, poll_s: float = 0.05) -> Job:
        """The job once it has ended (done, failed or cancelled)."""
        while True:
            job = await asyncio.to_thread(self.store.get, job_id)
            assert job is not None  # a submitted job (the store deletes no job)
            if job.state not in ACTIVE:
                return job
            await asyncio.sleep(poll_s)

    def merged_with(self, job: Job) -> list[str]:
        """The jobs `job` shared batched calls with, as anyone who may read `job` may see them: with --private only
        its owner's (the store records no other since; this also hides those a team server recorded before)."""
        if not self.settings.private:
            return job.merged
        return [other for other in job.merged if getattr(self.store.get(other), "owner", None) == job.owner]

    def view(self, job: Job, brief: bool = False) -> dict[str, Any]:
        """A job as clients see it (the request as given, never a secret: requests hold none)."""
        view: dict[str, Any] = {
            "id": job.id,
            "owner": job.owner,
            "type": job.type,
            "kind": job.kind,
            "state": job.state,
            "position": self.store.position(job),
            "progress": job.progress,
            "expected": job.expected,
            "error": job.error,
            "created": job.created,
            "started": job.started,
            "finished": job.finished,
            "cancel_requested": job.cancel,
            "merged_with": self.merged_with(job),
            "worker": job.worker,
            "url": f"{API}/jobs/{job.id}",
            "events": f"{API}/jobs/{job.id}/events",
            "title": _title(job.request),
        }
        if not brief:
            view["request"] = job.request
            view["assets"] = [
                {
                    "id": a.id,
                    "position": a.position,
                    "kind": a.kind,
                    "media_type": a.media_type,
                    "url": f"{API}/assets/{a.id}",
                    "meta": f"{API}/assets/{a.id}/meta",
                    "score": a.record.get("score"),
                    "seed": a.record.get("seed"),
                }
                for a in self.store.assets_of(job.id)
            ]
        return view


def fingerprint(request: Any) -> str:
    """What a request asks for, as a digest (defaults filled in, key order aside): an Idempotency-Key remembers it, so
    the same key with another request is refused instead of answered with the earlier job."""
    import hashlib
    import json

    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _title(request: dict[str, Any]) -> str:
    """What a job is about, in a line (a queue panel shows it): its first prompt, its recipe, or its rows."""
    prompt = request.get("prompt")
    if isinstance(prompt, list):
        prompt = f"{prompt[0] if prompt else ''}" + (f" (+{len(prompt) - 1} more)" if len(prompt) > 1 else "")
    if isinstance(prompt, str):
        return prompt[:200]
    if request.get("type") == "run":
        return f"chain {request.get('recipe') or '(inline recipe)'}"
    return f"batch of {len(request.get('rows') or [])} rows"


# The one table of error types by HTTP status. `type` is OpenAI's category (what clients of OpenAI-compatible
# servers branch on): the names llama.cpp's server uses for 400/401/403/404/5xx, OpenAI's rate_limit_exceeded for a
# 429, and conflict_error for a 409, the type OpenAI's own API gives its 409s (the `openai` package raises
# ConflictError). `aigc_type` is aigc's own name: an AIGCError's class, or the second column for a refusal of the
# HTTP layer. A status not listed: server_error from 500 up, invalid_request_error below.
_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "ConfigError"),
    401: ("authentication_error", "AuthenticationError"),
    403: ("permission_error", "PermissionError"),
    404: ("not_found_error", "NotFoundError"),
    405: ("invalid_request_error", "MethodNotAllowed"),
    409: ("conflict_error", "ConflictError"),
    413: ("invalid_request_error", "TooLarge"),
    422: ("invalid_request_error", "ConfigError"),
    429: ("rate_limit_exceeded", "QueueFull"),
    500: ("server_error", "GenerationError"),
    507: ("server_error", "StorageError"),
}


def validated(validate: Callable[[Any], Any], body: Any, skip: int = 0) -> Any:
    """`validate(body)` (a pydantic model's or adapter's), or a ConfigError naming the field as a client reads it:
    ("items", 2, "text") -> items[2].text."""
    try:
        return validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ""
        for part in first["loc"][skip:]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        raise ConfigError(f"{where or 'body'}: {first['msg']}", field=where or None) from None


def error_body(
    status: int,
    aigc_type: str | None,
    message: str,
    field: str | None = None,
    *,
    code: str | None = None,
    openai_type: str | None = None,
) -> dict[str, Any]:
    """{"message", "type", "aigc_type", "param", "field", "code"}: the one error every route answers (and an OpenAI
    stream's error event holds). `type` is OpenAI's category, so its clients branch on it; `aigc_type` is aigc's
    own error class, what aigc.Client and the studio read; `param` is OpenAI's name for aigc's `field`."""
    category, http_name = _ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "HTTPError")
    )
    return {
        "message": message,
        "type": openai_type or category,
        "aigc_type": aigc_type or http_name,
        "param": field,
        "field": field,
        "code": code,
    }


def error_response(
    request: Request | None,
    status: int,
    aigc_type: str | None,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
    openai_type: str | None = None,
) -> JSONResponse:
    """An error_body answered with its status. A bad request to an OpenAI-compatible route is a 400, as its clients
    expect; elsewhere a 422."""
    if status == 422 and request is not None and getattr(request.state, "openai", False):
        status = 400
    body = error_body(status, aigc_type, message, field, code=code, openai_type=openai_type)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def read_json(request: Request) -> Any:
    """A request's JSON body; a 422 that says what to send when it is not JSON."""
    try:
        return json_body(await request.body())
    except ConfigError:
        raise  # too deep: says the limit
    except (ValueError, RecursionError):
        raise HTTPException(422, "the body must be a JSON object (Content-Type: application/json).") from None


def json_body(raw: bytes) -> Any:
    """JSON text as Python values, refused (a ConfigError) when it nests deeper than the json_depth limit: the one
    reader of request bodies, so nothing after it (pydantic, a knob's check, the store's json.dumps) recurses past
    Python's limit into a 500. Bodies with few brackets, nearly all, are not walked at all."""
    import json

    from .. import limits

    value = json.loads(raw)  # C: nesting near Python's recursion limit is a RecursionError here, not a crash
    most = limits.get("json_depth")
    if raw.count(b"[") + raw.count(b"{") > most:
        limits.check("json_depth", _depth(value, most + 1), "how deep the request's JSON nests (at least)")
    return value


def _depth(value: Any, stop: int) -> int:
    """How deep `value`'s lists and objects nest, counted up to `stop` (then the walk ends)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest >= stop:
            break
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def new_token() -> str:
    return secrets.token_urlsafe(24)

"""The server's edge, what every request and answer passes before any route: request bodies are bounded (over
the limit is a 413 before the body is read, declared length or not); a request that changes something comes from no
page, this server's own or an origin the operator listed, and its body is JSON (so a page elsewhere cannot make a
browser post to it: a cross-site form or no-cors fetch can send neither), or a multipart form on the routes that take
uploads (FORM_ROUTES: there the Origin check alone keeps other pages out); no answer is sniffed into a page."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect

log = logging.getLogger("aigc.server")

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the routes whose body is a multipart form (OpenAI's image edits upload files), the one exception to "JSON only"
FORM_ROUTES = frozenset({"/v1/images/edits"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse a request body larger than `max_bytes` with 413 and a line saying the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watching(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watching)
        except _TooLarge:
            if not started:
                await self._refuse(send)
        except ClientDisconnect:  # gone mid-body, or too slow (serve.py's --request-timeout): a line, not a traceback
            log.warning(
                "aigc serve: %s %r: the client went away (or ran past --request-timeout) after %s of %s bytes "
                "of its body; nothing was done",
                scope.get("method"),
                scope.get("path", "")[:200],
                f"{seen:,}",
                f"{int(declared):,}" if declared else "an undeclared number of",
            )

    async def _refuse(self, send: Any) -> None:
        message = (
            f"the request body is over {self.max_bytes:,} bytes; send less (the server's --max-body-mb raises it)."
        )
        await refuse(send, 413, "TooLarge", message)


class SameOriginWrites:
    """ASGI middleware: a request that changes state (POST, PUT, PATCH, DELETE) is refused with 403 when a browser
    sends it from a page of another origin than this server's own or one of --cors-origin, and with 415 when it
    carries a body that is not declared JSON (or, on FORM_ROUTES, multipart/form-data). A page elsewhere can make a
    browser send a "simple" cross-site request (a form, or fetch with mode "no-cors": text/plain or a multipart
    form, no preflight, no token needed on a tokenless server); it always names its Origin and can never declare
    application/json without a preflight that CORS denies. Clients that are not browsers (curl, the openai package,
    aigc.Client) send no Origin."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...]) -> None:
        self.app, self.allowed_hosts, self.cors_origins = app, allowed_hosts, cors_origins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or []}
        origin = headers.get("origin")
        if origin is not None and not self.allowed(origin, scope["scheme"], headers.get("host", "")):
            return await refuse(
                send,
                403,
                None,
                f"a page of {origin} may not change anything on this server (its "
                "own pages and the --cors-origin origins may); start aigc serve "
                f"with --cors-origin {origin} to allow it.",
            )
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        content_type = headers.get("content-type")
        form = scope.get("path") in FORM_ROUTES
        if has_body and not (is_json(content_type) or (form and is_form(content_type))):
            wanted = (
                "multipart/form-data (curl: -F image=@picture.png -F prompt=...)"
                if form
                else "JSON with the header Content-Type: application/json (curl: -H 'Content-Type: application/json')"
            )
            sent = content_type or "no Content-Type"
            return await refuse(send, 415, "UnsupportedMediaType", f"the body is sent as {sent}; send it as {wanted}.")
        await self.app(scope, receive, send)

    def allowed(self, origin: str, scheme: str, host: str) -> bool:
        """Whether a page of `origin` may write: this server as the request reached it (scheme://host:port, the
        host one of the bound address and --allowed-host), or an origin the operator listed."""
        if origin in self.cors_origins or "*" in self.cors_origins:
            return True
        page, here = _site(origin), _site(f"{scheme}://{host}")
        return page is not None and page == here and self._listed(page[1])

    def _listed(self, hostname: str) -> bool:
        """A host the operator named (a `*.example.org` pattern covers its subdomains; a bare `*` names none)."""
        names = {name.strip("[]").lower() for name in self.allowed_hosts}
        return hostname in names or any(name.startswith("*.") and hostname.endswith(name[1:]) for name in names)


class NoSniff:
    """ASGI middleware: every answer says X-Content-Type-Options: nosniff, so a browser renders a response only as
    the type it declares (an asset's text never runs as a script or page of this origin). One owner for the whole
    server; a route that sets the header itself (the studio's files) keeps its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def marked(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, marked)


def is_json(content_type: str | None) -> bool:
    """application/json, with or without parameters (`; charset=utf-8`)."""
    return _media_type(content_type) == "application/json"


def is_form(content_type: str | None) -> bool:
    """multipart/form-data, with its parameters (`; boundary=...`)."""
    return _media_type(content_type) == "multipart/form-data"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _site(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, the port filled in for http and https; None if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname.lower(), port


async def refuse(send: Any, status: int, aigc_type: str | None, message: str) -> None:
    """Answer an error (service.error_body's shape) before any route has run."""
    from .service import error_body

    body = json.dumps({"error": error_body(status, aigc_type, message)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

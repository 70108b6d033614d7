"""The studio: the web page at `/` (HTML, CSS and plain JavaScript modules shipped in the package, no build
step). It talks only to the public API. Every response of it carries a Content-Security-Policy that allows
scripts from this origin only (no inline script, no eval), so a prompt that smuggles markup stays text."""

from __future__ import annotations

import re
from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_FILE = re.compile(r"^[a-z][a-z0-9_-]{0,40}\.(html|css|js|svg)$")


def studio_file(name: str) -> Response:
    """One file of the studio package by its plain name (no directories, no dot-files: nothing else is served)."""
    if not _FILE.match(name):
        raise HTTPException(404, f"the studio has no file {name!r}")
    resource = resources.files("aigc.studio").joinpath(name)
    if not resource.is_file():
        raise HTTPException(404, f"the studio has no file {name!r}")
    suffix = name[name.rfind(".") :]
    return Response(resource.read_bytes(), media_type=TYPES[suffix], headers=HEADERS)


def studio_routes(app: FastAPI) -> None:
    """The page and its files; HEAD answers as GET does (headers, no body), as link checkers and proxies expect."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> Response:
        return studio_file("index.html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon() -> Response:
        return studio_file("favicon.svg")  # what a browser asks for when a page (a JSON view, say) names no icon

    @app.api_route("/studio/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def asset(name: str) -> Response:
        return studio_file(name)

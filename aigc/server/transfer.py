"""What a remote client needs besides jobs: a run or batch job's output directory (a listing with sizes and
hashes, and its files, so `aigc run/batch --server` can mirror it) and POST /v1/score (aigc.score on the
server's scorer and team library)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from ..errors import ConfigError
from ..storage import sha256_file
from .auth import Principal
from .bodies import declared_body
from .runner import OUTPUTS
from .runner import output_dir as job_output_dir
from .service import API, Service, read_json, validated

# a job's files are the user's own content (a gallery page, say): never run as a page of the API's origin
_SANDBOXED = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


class ScoreItem(BaseModel):
    """One thing to score: an asset the caller may see, a text, or a file as a data URL; `prompt` is its own
    prompt (as an Asset carries one), which the request's prompt overrides."""

    model_config = ConfigDict(extra="forbid")
    asset: StrictStr | None = None
    text: StrictStr | None = None
    data: StrictStr | None = None
    prompt: StrictStr | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ScoreItem]
    prompt: StrictStr | None = None
    library: StrictBool = False  # judge novelty against the server's team library too
    weights: dict[str, StrictFloat | StrictInt] | None = None


def transfer_routes(app: FastAPI, service: Service) -> None:
    """GET /v1/jobs/{id}/files, GET /v1/jobs/{id}/files/{path} and POST /v1/score."""

    @app.get(f"{API}/jobs/{{job_id}}/files")
    def job_files(job_id: str, principal: Principal = Depends(service.who)) -> dict[str, Any]:
        return {"files": listing(output_dir(service, job_id, principal))}

    @app.get(f"{API}/jobs/{{job_id}}/files/{{path:path}}")
    def job_file(job_id: str, path: str, principal: Principal = Depends(service.who)) -> FileResponse:
        root = output_dir(service, job_id, principal)
        target = listed(root, path)
        if target is None:
            raise HTTPException(404, f"job {job_id} has no file {path!r}; GET {API}/jobs/{job_id}/files lists them.")
        return FileResponse(target, headers=_SANDBOXED, filename=target.name)

    @app.post(f"{API}/score", openapi_extra=declared_body(ScoreRequest))
    async def score(request: Request, principal: Principal = Depends(service.who)) -> dict[str, Any]:
        from .. import api

        parsed = parse_score(await read_json(request))  # the one body reader: bounded nesting, never a 500
        items = await asyncio.to_thread(score_items, service, parsed, principal)
        library = service.places.library if parsed.library else None
        scores = await asyncio.to_thread(
            api.score,
            items,
            parsed.prompt,
            library=library,
            weights=parsed.weights,
            manager=service.manager,
            progress=False,
        )  # no bars in a server's log
        return {"scores": scores}


def output_dir(service: Service, job_id: str, principal: Principal) -> Path:
    """The output directory of a run or batch job the caller may see (it may not exist yet); 404 for any other."""
    job = service.readable(job_id, principal)
    if job.type not in OUTPUTS:
        raise HTTPException(
            404,
            f"job {job_id} is a {job.type} job; only run and batch jobs have files (a generate "
            f"job's outputs are its assets: GET {API}/jobs/{job_id}).",
        )
    return job_output_dir(service.settings.data, job)


def listing(root: Path) -> list[dict[str, Any]]:
    """Every file of `root` a client may fetch: relative posix path, size and sha256."""
    if not root.is_dir():
        return []
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if listed(root, relative) is not None:
            files.append({"path": relative, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return files


def listed(root: Path, relative: str) -> Path | None:
    """`root/relative` if it is one of root's listed files, else None: a regular file reached without a link or
    `..` (so it stays inside root), with no hidden part (.aigc.lock, a .NAME.part write in progress). The one
    rule the listing and a fetch share."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p.startswith(".") for p in parts):
        return None
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    return path if path.is_file() else None


def parse_score(body: Any) -> ScoreRequest:
    """A score request, or a ConfigError naming the item (items[i]) or field at fault."""
    from .. import limits

    if not isinstance(body, dict):
        raise ConfigError('the body must be a JSON object: {"items": [...], "prompt": ...}.')
    parsed = validated(ScoreRequest.model_validate, body)
    limits.check("best_of", len(parsed.items), "the items of one score request", field="items")
    for index, item in enumerate(parsed.items):
        if sum(value is not None for value in (item.asset, item.text, item.data)) != 1:
            raise ConfigError(
                f'items[{index}]: give exactly one of "asset" (an asset id), "text" or "data" (a '
                "data URL such as data:image/png;base64,...).",
                field=f"items[{index}]",
            )
    return parsed


def score_items(service: Service, request: ScoreRequest, principal: Principal) -> list[Any]:
    """Each item as aigc.score takes it: an asset the caller may see, a text, or decoded data. Every image is
    measured from its header first, and the pixels of all of them checked against the megapixels limit, before
    any is decoded (each is checked alone again as it is decoded: formats' reader)."""
    from .. import limits
    from ..media.assets import load
    from ..scoring.scorer import Item

    sources: list[Any] = []  # per item: an asset's file, a data URL's (media type, bytes), or None for a text
    pixels = 0
    for index, item in enumerate(request.items):
        where = f"items[{index}]"
        if item.asset is not None:
            row = _owned_asset(service, item.asset, principal, where)
            sources.append(service.settings.data / row.path)
            pixels += _header_pixels(sources[-1]) if row.kind == "image" else 0
        elif item.data is not None:
            sources.append(_data_url(item.data, where))
            pixels += _header_pixels(io.BytesIO(sources[-1][1])) if sources[-1][0].startswith("image/") else 0
        else:
            sources.append(None)
    limits.check(
        "megapixels", -(-pixels // 1_000_000), "the megapixels of the images of one score request", field="items"
    )
    items = []
    for index, (item, source) in enumerate(zip(request.items, sources, strict=True)):
        if item.asset is not None:
            asset = load(source)
            items.append(asset if item.prompt is None else Item(asset.kind, asset.data, item.prompt))
        elif item.text is not None:
            items.append(Item("text", item.text, item.prompt))
        else:
            media_type, raw = source  # a data URL's
            kind, data, record = _decoded(media_type, raw, f"items[{index}]")
            own = item.prompt if item.prompt is not None else (record or {}).get("prompt")
            items.append(Item(kind, data, own if isinstance(own, str) else None))
    return items


def _header_pixels(image_file: Any) -> int:
    """An image's width x height from its header alone (Pillow's Image.open decodes no pixel); 0 for what Pillow
    cannot identify (decoding it later says why)."""
    from PIL import Image

    try:
        with Image.open(image_file) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, its bomb error...: decoding reports it
        return 0


def _owned_asset(service: Service, asset_id: str, principal: Principal, where: str) -> Any:
    """The row of an asset the caller may see."""
    try:
        return service.readable_asset(asset_id, principal)
    except HTTPException:
        raise ConfigError(f"{where}: no asset {asset_id!r} that you may see to score.", field=where) from None


def _data_url(url: str, where: str) -> tuple[str, bytes]:
    """A base64 data URL's media type and bytes."""
    header, comma, payload = url.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64") or not comma:
        raise ConfigError(f"{where}: data must be a base64 data URL, e.g. data:image/png;base64,...", field=where)
    try:
        raw = base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise ConfigError(f"{where}: the data URL's base64 is malformed ({error}).", field=where) from None
    return header[len("data:") : -len(";base64")], raw


def _decoded(media_type: str, raw: bytes, where: str) -> tuple[str, Any, dict[str, Any] | None]:
    """A data URL's kind, content and embedded aigc record (None if it has none), through the formats table."""
    from ..media import formats

    try:
        fmt = formats.by_media_type(media_type)
        decoded = formats.decode(fmt, raw, where)
    except ConfigError as error:
        message = str(error) if where in str(error) else f"{where}: {error}"
        raise ConfigError(message, field=where) from None
    return fmt.kind, decoded.data, decoded.record

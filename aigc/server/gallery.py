"""The gallery's reads: GET /v1/assets (filtered, sorted, keyset-paged: as fast on page 200 as on page 1, with
indexes on time, score and owner) and POST /v1/assets/zip (a selection with its manifest, bounded)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

from .. import limits
from ..errors import ConfigError
from .auth import Principal
from .bodies import ZIP, declared_body
from .service import API, Service, read_json

KINDS = ("text", "image", "audio")
SORT_KEYS = {"time": "created", "score": "COALESCE(score, -1.0)"}
DEFAULT_PAGE = 60
_ID = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass
class Query:
    """A checked listing request."""

    kind: str | None = None
    words: tuple[str, ...] = ()
    owner: str | None = None
    job: str | None = None
    since: float | None = None
    until: float | None = None
    min_score: float | None = None
    sort: str = "time"
    order: str = "desc"
    limit: int = DEFAULT_PAGE
    cursor: tuple[float, str] | None = None


def parse_query(params: dict[str, str]) -> Query:
    """GET /v1/assets's parameters checked one by one; a ConfigError naming the first bad one."""
    known = {"kind", "q", "owner", "job", "since", "until", "min_score", "sort", "order", "limit", "cursor"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: not a filter of /v1/assets; use {', '.join(sorted(known))}.", field=unknown[0]
        )
    query = Query()
    if params.get("kind"):
        query.kind = _choice("kind", params["kind"], KINDS)
    if params.get("q"):
        words = params["q"].split()
        if len(params["q"]) > 200 or len(words) > 8:
            raise ConfigError("q: at most 8 words and 200 characters of prompt words.", field="q")
        query.words = tuple(words)
    if params.get("owner"):
        query.owner = _name("owner", params["owner"])
    if params.get("job"):
        query.job = _hex("job", params["job"])
    query.since = _time("since", params["since"]) if params.get("since") else None
    query.until = _time("until", params["until"]) if params.get("until") else None
    if params.get("min_score"):
        query.min_score = _number("min_score", params["min_score"], 0.0, 1.0)
    query.sort = _choice("sort", params.get("sort") or "time", tuple(SORT_KEYS))
    query.order = _choice("order", params.get("order") or "desc", ("desc", "asc"))
    if params.get("limit"):
        query.limit = int(_number("limit", params["limit"], 1, limits.get("page"), whole=True))
    if params.get("cursor"):
        query.cursor = _cursor(params["cursor"], query)
    return query


def _choice(field: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{field}={value[:40]!r}: use one of {', '.join(choices)}.", field=field)
    return value


def _name(field: str, value: str) -> str:
    if len(value) > 100 or not value.strip():
        raise ConfigError(f"{field}: a user name of 1-100 characters.", field=field)
    return value


def _hex(field: str, value: str) -> str:
    if not _ID.match(value):
        raise ConfigError(
            f"{field}={value[:40]!r}: an id (hex digits), as /v1/jobs and /v1/assets give them.", field=field
        )
    return value


def _number(field: str, value: str, low: float, high: float, whole: bool = False) -> float:
    try:
        number = int(value) if whole else float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        what = "a whole number" if whole else "a number"
        raise ConfigError(f"{field}={value[:40]!r}: {what} from {low:g} to {high:g}.", field=field)
    return number


def _time(field: str, value: str) -> float:
    """A date (2026-12-01), a date and time (ISO 8601, UTC unless it says), or Unix seconds."""
    try:
        return float(value) if re.fullmatch(r"\d{1,12}(\.\d+)?", value) else _iso(value)
    except ValueError:
        raise ConfigError(
            f"{field}={value[:40]!r}: a date like 2026-12-01, an ISO time like 2026-12-01T09:30, or Unix seconds.",
            field=field,
        ) from None


def _iso(value: str) -> float:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _cursor(text: str, query: Query) -> tuple[float, str]:
    """A cursor this listing handed out: the last row's sort key and id, for the same sort and order."""
    try:
        sort, order, key, last = json.loads(base64.urlsafe_b64decode(text.encode() + b"==").decode())
        if sort != query.sort or order != query.order or not isinstance(last, str) or not _ID.match(last):
            raise ValueError
        return float(key), last
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ConfigError(
            "cursor: pass back the next_cursor of the previous page, with the same sort and order.", field="cursor"
        ) from None


def _encode_cursor(query: Query, key: float, last: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([query.sort, query.order, key, last]).encode()).decode().rstrip("=")


def listing_sql(query: Query) -> tuple[str, list[Any], str, list[Any]]:
    """The page's SQL and the count's, built from the checked query only (values always as parameters)."""
    key = SORT_KEYS[query.sort]
    where: list[str] = ["1=1"]
    args: list[Any] = []
    for column, value in (("kind", query.kind), ("owner", query.owner), ("job", query.job)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    for word in query.words:
        where.append("prompt LIKE ? ESCAPE '\\'")
        args.append("%" + re.sub(r"([%_\\])", r"\\\1", word) + "%")
    for op, bound in ((">=", query.since), ("<", query.until)):
        if bound is not None:
            where.append(f"created {op} ?")
            args.append(bound)
    if query.min_score is not None:
        where.append("score >= ?")
        args.append(query.min_score)
    filters = " AND ".join(where)
    page = list(where)
    compare, direction = ("<", "DESC") if query.order == "desc" else (">", "ASC")
    if query.cursor is not None:
        page.append(f"({key}, id) {compare} (?, ?)")
    sql = (
        f"SELECT *, {key} AS sort_key FROM assets WHERE {' AND '.join(page)} ORDER BY {key} {direction}, "
        f"id {direction} LIMIT ?"
    )
    page_args = [*args, *(query.cursor or ()), query.limit + 1]
    return sql, page_args, f"SELECT COUNT(*) FROM assets WHERE {filters}", args


def list_assets(service: Service, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
    query = parse_query(params)
    if not service.sees_all(principal):  # --private
        if query.owner not in (None, principal.name):
            raise HTTPException(
                403,
                f"owner={query.owner}: this server is private (aigc serve --private): you see "
                "your own assets; an admin sees everyone's.",
            )
        query.owner = principal.name
    sql, args, count_sql, count_args = listing_sql(query)
    rows = service.store.query(sql, args)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    total = service.store.query(count_sql, count_args)[0][0]
    ratings = service.store.ratings([r["id"] for r in rows])
    assets = [asset_view(service, r, ratings[r["id"]], principal) for r in rows]
    cursor = _encode_cursor(query, rows[-1]["sort_key"], rows[-1]["id"]) if more else None
    return {"assets": assets, "total": total, "next_cursor": cursor, "limit": query.limit}


def asset_view(service: Service, row: Any, ratings: list[dict[str, Any]], principal: Principal) -> dict[str, Any]:
    """An asset as the gallery shows it: what it is, where to get it (links signed for an hour, so an <img> or
    <audio> loads without a token header), and its ratings."""
    record = json.loads(row["record"])
    signed = service.signer.query(row["id"])
    view = {
        "id": row["id"],
        "job": row["job"],
        "position": row["position"],
        "kind": row["kind"],
        "owner": row["owner"],
        "media_type": row["media_type"],
        "size": row["size"],
        "created": row["created"],
        "prompt": row["prompt"],
        "score": row["score"],
        "seed": record.get("seed"),
        "backend": record.get("backend"),
        "model": record.get("model"),
        "rank": record.get("rank"),
        "workflow": record.get("workflow"),
        "url": f"{API}/assets/{row['id']}",
        "meta": f"{API}/assets/{row['id']}/meta",
        "src": f"{API}/assets/{row['id']}?{signed}",
        "thumbnail": f"{API}/assets/{row['id']}/thumbnail?{signed}" if row["kind"] == "image" else None,
        "ratings": {
            "up": sum(r["value"] > 0 for r in ratings),
            "down": sum(r["value"] < 0 for r in ratings),
            "mine": next((r for r in ratings if r["user"] == principal.name), None),
        },
    }
    if row["kind"] == "text":
        view["excerpt"] = _excerpt(service, row)
    if row["kind"] == "audio":
        view["duration_s"] = (record.get("info") or {}).get("duration_s")
    return view


def _excerpt(service: Service, row: Any, chars: int = 400) -> str:
    """The first characters of a text asset (a card shows them; the file itself is the whole)."""
    with open(service.settings.data / row["path"], "rb") as file:
        return file.read(chars * 4).decode("utf-8", errors="ignore")[:chars]


def zip_of(service: Service, principal: Principal, body: Any) -> Any:
    """A zip of the assets `ids` the caller may see (in that order) and a manifest.jsonl of their records, spooled
    to disk past 32 MiB so memory stays bounded."""
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError('ids: a list of asset ids, e.g. {"ids": ["3f2a..."]}.', field="ids")
    limits.check("zip_assets", len(ids), "the assets of one zip", field="ids")
    rows = [service.readable_asset(asset_id, principal) for asset_id in dict.fromkeys(ids)]
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 2**20)
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        lines = []
        for row in rows:
            name = f"{row.kind}/{row.id}{_suffix(row.path)}"
            archive.write(service.settings.data / row.path, name)
            lines.append(json.dumps({"id": row.id, "job": row.job, "file": name, **row.record}))
        archive.writestr("manifest.jsonl", "\n".join(lines) + "\n")
    spool.seek(0)
    return spool


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind(".") :] if "." in name else ""


def gallery_routes(app: FastAPI, service: Service) -> None:
    @app.get(f"{API}/assets")
    def assets(request: Request, principal: Principal = Depends(service.who)) -> dict[str, Any]:
        params = dict(request.query_params)
        return list_assets(service, principal, params)

    @app.post(f"{API}/assets/zip", openapi_extra=declared_body(ZIP))
    async def assets_zip(request: Request, principal: Principal = Depends(service.who)) -> StreamingResponse:
        spool = await asyncio.to_thread(zip_of, service, principal, await read_json(request))

        def chunks():
            with spool:
                while block := spool.read(2**20):
                    yield block

        return StreamingResponse(
            chunks(),
            media_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="aigc-assets.zip"'},
        )

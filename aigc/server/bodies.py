"""The JSON bodies the API reads, declared in its OpenAPI schema (`/openapi.json`).

The routes read their bodies themselves (service.read_json: bounded nesting, one error shape), so FastAPI cannot
see them; these declarations let a client generator, a reader of the schema and the fuzzing pass
(tests/test_server_fuzz.py) know what each route takes. aigc's own routes take their pydantic models, so those
schemas cannot drift from the checks; the OpenAI routes list the fields their checks in openai.py read (any other
field is a backend knob, so their objects stay open)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter


def declared_body(schema: Any) -> dict[str, Any]:
    """A route's `openapi_extra`: a required JSON body of `schema` (a pydantic model or type, or a JSON schema)."""
    if not isinstance(schema, dict):
        schema = _inlined(TypeAdapter(schema).json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def declared_form(schema: dict[str, Any]) -> dict[str, Any]:
    """A route's `openapi_extra`: a required multipart/form-data body of `schema` (its files `format: binary`)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` written in place of each `$ref`: an operation's schema cannot carry `$defs`
    of its own (a `$ref` there resolves against the whole OpenAPI document). The models here do not nest in
    themselves, so the expansion ends. A discriminator's mapping names `$defs` too: it goes, as each branch's tag
    is a `const` of its own."""
    defs = schema.pop("$defs", {})

    def expand(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return expand(defs[ref.removeprefix("#/$defs/")])
            return {key: expand(value) for key, value in node.items() if key != "discriminator"}
        if isinstance(node, list):
            return [expand(value) for value in node]
        return node

    return expand(schema)


def _object(required: tuple[str, ...], **fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": fields}


_TEXT = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 1}
_SHARED: dict[str, dict[str, Any]] = {
    "model": {"type": "string", "description": "an id from /v1/models, or 'default'"},
    "seed": {"type": "integer"},
    "n": _COUNT,
    "backend": _TEXT,
    "best_of": _COUNT,
    "min_score": {"type": "number"},
    "max_attempts": _COUNT,
}
_SAMPLING: dict[str, dict[str, Any]] = {
    "max_tokens": _COUNT,
    "max_completion_tokens": _COUNT,
    "temperature": {"type": "number", "minimum": 0},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "stream": {"type": "boolean"},
    "stop": {"anyOf": [_TEXT, {"type": "array", "items": _TEXT}]},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
}


def chat(roles: Any) -> dict[str, Any]:
    turn = _object(
        ("role", "content"),
        role={"enum": list(roles)},
        content={
            "anyOf": [_TEXT, {"type": "array", "items": _object(("type", "text"), type={"const": "text"}, text=_TEXT)}]
        },
    )
    return _object(
        ("model", "messages"), messages={"type": "array", "minItems": 1, "items": turn}, **_SHARED, **_SAMPLING
    )


def completion() -> dict[str, Any]:
    return _object(
        ("model", "prompt"), prompt={"anyOf": [_TEXT, {"type": "array", "items": _TEXT}]}, **_SHARED, **_SAMPLING
    )


def image(formats: Any) -> dict[str, Any]:
    return _object(
        ("model", "prompt"),
        prompt=_TEXT,
        size={"type": "string", "description": "WxH (64x64) or auto"},
        response_format={"enum": ["url", "b64_json"]},
        output_format={"enum": list(formats)},
        **_SHARED,
    )


def image_edit(formats: Any) -> dict[str, Any]:
    """/v1/images/edits' form (openai_edits.py reads it): its fields are text, its image and mask files."""
    picture = {"type": "string", "format": "binary"}
    return _object(
        ("model", "image", "prompt"),
        image=picture,
        mask={**picture, "description": "PNG, transparent (alpha 0) where the image is edited"},
        prompt=_TEXT,
        size={"type": "string", "description": "WxH (64x64) or auto (the image's own size)"},
        response_format={"enum": ["url", "b64_json"]},
        output_format={"enum": list(formats)},
        **_SHARED,
    )


def speech(formats: Any) -> dict[str, Any]:
    return _object(
        ("model", "input"),
        input=_TEXT,
        voice=_TEXT,
        speed={"type": "number", "exclusiveMinimum": 0},
        response_format={"enum": list(formats)},
        stream_format={"enum": ["audio"]},
        **_SHARED,
    )


ZIP = _object(("ids",), ids={"type": "array", "minItems": 1, "items": _TEXT})

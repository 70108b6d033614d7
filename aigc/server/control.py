"""POST /v1/control/preview: the control map a ControlNet would see, made from an image the caller may use as an
input ({"asset": id} or a data URL, read as a job's control image is) by one of the weight-free preprocessors, so
the studio can show it before anything runs. Nothing loads but the image; errors are one line in the one shape."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..errors import ConfigError, one_of
from .auth import Principal
from .bodies import declared_body
from .jobs import input_image  # a job's input image reader: an asset or a data URL, bounded
from .service import API, Service, read_json, validated


class ControlPreview(BaseModel):
    """A control image and how to read it: the `image`, `preprocess` and `options` of a `control` entry."""

    model_config = ConfigDict(extra="forbid")
    image: Any = Field(  # checked by the input images' own reader, whose message says what to send
        description='{"asset": "<id of an image asset>"} or a data URL (data:image/png;base64,...)',
        json_schema_extra={
            "anyOf": [
                {"type": "object", "required": ["asset"], "properties": {"asset": {"type": "string"}}},
                {"type": "string", "pattern": "^data:image/"},
            ]
        },
    )
    preprocess: StrictStr = Field("none", description="none, canny, scribble, tile or invert")
    options: dict[str, Any] = Field(default_factory=dict, description="the preprocessor's options, e.g. low, high")


def checked_options(preprocess: str, options: dict[str, Any]) -> dict[str, float]:
    """The preprocessor's options with defaults filled in; a one-line ConfigError naming `preprocess` or `options`."""
    from ..generators.image import control_maps

    spec = control_maps.PREPROCESSORS.get(preprocess)
    if spec is None:
        raise ConfigError(
            f"preprocess={preprocess[:80]!r} is not a preprocessor; use {one_of(control_maps.PREPROCESSORS)}.",
            field="preprocess",
        )
    try:
        return control_maps.check(preprocess, **options)
    except ConfigError as error:
        raise ConfigError(f"options: {error}", field="options") from None


def preview(service: Service, principal: Principal, body: ControlPreview) -> bytes:
    """The control map as PNG bytes, at the image's own size. Blocking (it decodes and filters the image)."""
    from ..generators.image import control_maps
    from ..media.assets import load

    values: dict[str, Any] = checked_options(body.preprocess, body.options)  # its keys: the preprocessor's options

    def image_of(asset_id: str) -> Any:
        row = service.readable_asset(asset_id, principal)  # another's, on a private server: a 404, as everywhere
        if row.kind != "image":
            raise ConfigError(f"image: asset {asset_id} is {row.kind}; a control image is an image.", field="image")
        return load(service.settings.data / row.path).data  # the server's own file, as a job's input image is

    picture = input_image("image", body.image, image_of)
    mapped = control_maps.make(body.preprocess, picture, **values)
    buffer = io.BytesIO()
    mapped.save(buffer, "PNG")
    return buffer.getvalue()


def control_routes(app: FastAPI, service: Service) -> None:
    @app.post(
        f"{API}/control/preview",
        openapi_extra=declared_body(ControlPreview),
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the control map, at the image's size"}},
    )
    async def post_preview(request: Request, principal: Principal = Depends(service.who)) -> Response:
        body = validated(ControlPreview.model_validate, await read_json(request))
        png = await asyncio.to_thread(preview, service, principal, body)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

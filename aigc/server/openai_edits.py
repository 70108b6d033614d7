"""OpenAI's POST /v1/images/edits read as an image job's body: its multipart form (the `openai` package's
`images.edit`, or curl -F) read within bounds, the uploaded picture and mask turned into the job's `init_image` and
`mask` as data URLs (what jobs.files_resolved takes, so no client path ever reaches the file system), and its text
fields typed by the Params that own them.

OpenAI's mask is transparent where the image is edited; aigc's (A1111's) is white where it is repainted. The mask's
alpha becomes aigc's grey mask (alpha 0 -> white, opaque -> black, in between -> grey, which blends); without a
mask the picture's own alpha is read the same way, as OpenAI reads it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from .. import limits
from ..errors import ConfigError
from ..generators.knobs import Param
from .body import is_form

MAX_FILES = 17  # OpenAI's 16 images and a mask: a client that sends several images gets the one-image line
MAX_FIELDS = 200  # OpenAI's two dozen fields, aigc's own and every knob of a backend, with room for lists
LARGEST_READ = 8192  # pixels a side of an image read, as for an init image (generators/image/pictures.py)
# what OpenAI takes to edit, by Pillow's name (MPO: a camera's JPEG holding several pictures)
MEDIA_TYPES = {"PNG": "image/png", "WEBP": "image/webp", "JPEG": "image/jpeg", "MPO": "image/jpeg"}
OPAQUE = 128  # alpha from which a pixel counts as kept: below it, transparent (OpenAI) and repainted (aigc)
# the fields that are not a backend's knobs, as text becomes their value (a knob's own Param types it: typed_knobs)
FIELDS = {
    "n": Param(None, "how many images", "int"),
    "seed": Param(None, "the first image's seed", "int"),
    "best_of": Param(None, "candidates per image", "int"),
    "max_attempts": Param(None, "rounds of re-sampling", "int"),
    "min_score": Param(None, "the score to reach", "float"),
    "diverse": Param(None, "pick diverse candidates", "bool"),
    "library": Param(None, "judge novelty against the team's library", "bool"),
    "stream": Param(None, "stream partial images", "bool"),
}
UPLOAD = "curl -F image=@picture.png -F mask=@mask.png -F prompt=..."


@dataclass
class Form:
    """A multipart form: its text fields (a name ending in [] is a list, as the openai package sends one) and its
    files' bytes by field name."""

    fields: dict[str, str | list[str]] = field(default_factory=dict)
    files: dict[str, list[bytes]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        key = name.removesuffix("[]")
        listed = self.fields.setdefault(key, []) if name.endswith("[]") else None
        if isinstance(listed, list):
            listed.append(value)
        elif key in self.fields:
            raise ConfigError(f"{key} is sent twice; send it once (a list as {key}[] parts).", field=key)
        else:
            self.fields[key] = value


def field_bytes() -> int:
    """The most bytes one text field may hold: a prompt at the prompt_chars limit, 4 UTF-8 bytes a character."""
    return 4 * limits.get("prompt_chars") + 1024


async def read_form(request: Request) -> Form:
    """The request's multipart form, bounded: files and fields counted, each text field's size limited (the whole
    body is already bounded by --max-body-mb); a malformed form is starlette's one-line 400."""
    if not is_form(request.headers.get("content-type")):
        raise ConfigError(f"send the edit as multipart/form-data, the image and mask as files ({UPLOAD}).")
    form = Form()
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=field_bytes()) as parts:
        for name, value in parts.multi_items():
            if isinstance(value, str):
                form.add(name, value)
            else:
                form.files.setdefault(name, []).append(await value.read())
    return form


def edit_body(form: Form) -> dict[str, Any]:
    """The form as the JSON body /v1/images/generations reads, plus `init_image` and `mask` as data URLs. Blocking
    (it decodes the images): call it from a thread."""
    body = {name: _typed(name, value) for name, value in form.fields.items()}
    for name in ("image", "mask", "init_image"):
        if name in body:
            raise ConfigError(f"{name}: send the picture and its mask as files, not text ({UPLOAD}).", field=name)
    if body.pop("stream", None):
        raise ConfigError("stream: an edit is answered whole here; leave stream out.", field="stream")
    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        raise ConfigError("prompt is required: what the edited image shows.", field="prompt")
    files = dict(form.files)
    images, masks = files.pop("image", []) + files.pop("image[]", []), files.pop("mask", [])
    if files:
        name = next(iter(files))
        raise ConfigError(f"{name!r} is a file; this route takes two: image and mask.", field=name)
    if len(images) != 1:
        raise ConfigError(
            f"{len(images)} images were sent; aigc edits one image a request: send one image (and its mask)."
            if images
            else f"image is required: the picture to edit, a PNG, WebP or JPEG file ({UPLOAD}).",
            field="image",
        )
    if len(masks) > 1:
        raise ConfigError(f"{len(masks)} masks were sent; send one mask, for the one image.", field="mask")
    picture = _opened(images[0], "image")
    body["init_image"] = _data_url(images[0], MEDIA_TYPES[picture.format])
    body["mask"] = _data_url(_png(_alpha_mask(_opened(masks[0], "mask") if masks else picture, bool(masks))))
    return body


def typed_knobs(params: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    """A backend's knobs sent as form text, read the way each Param reads text (Generator.parse_knobs), each part of a
    list alike; an unknown knob is left for the backend's own check to name."""
    return {name: _parsed(declared.get(name), name, value) for name, value in params.items()}


def _typed(name: str, value: str | list[str]) -> Any:
    """One of FIELDS as its value; anything else stays text: OpenAI's, or a backend knob (typed_knobs, once the
    backend is known)."""
    return _parsed(FIELDS.get(name), name, value)


def _parsed(param: Param | None, name: str, value: Any) -> Any:
    if param is None or param.reads_files:
        return value
    return [param.parse(name, v) for v in value] if isinstance(value, list) else param.parse(name, value)


def _opened(data: bytes, what: str) -> Any:
    """An uploaded PNG, WebP or JPEG, decoded; its size checked from its header (the megapixels limit for images
    read, 8192 px a side) before a pixel is decoded, Pillow's decompression-bomb guard on."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in MEDIA_TYPES:
            raise ConfigError(f"{what} is {image.format}; send a PNG, WebP or JPEG file.", field=what)
        limits.check_image(image.width, image.height, what, field=what)
        if max(image.size) > LARGEST_READ:
            raise ConfigError(f"{what} is {image.width}x{image.height}; at most {LARGEST_READ} px a side.", field=what)
        image.load()
    except ConfigError:
        raise
    except UnidentifiedImageError:
        raise ConfigError(f"{what} is not an image Pillow reads; send a PNG, WebP or JPEG file.", field=what) from None
    except Exception as error:  # whatever Pillow raises on a client's bytes (OSError, SyntaxError, EOFError...)
        raise ConfigError(
            f"{what} is not a readable image ({error}); send a PNG, WebP or JPEG file.", field=what
        ) from None
    return image


def _alpha_mask(image: Any, given: bool) -> Any:
    """aigc's mask (L, white = repaint) from OpenAI's (alpha 0 = edit): the alpha channel inverted."""
    from PIL import ImageOps

    what = "mask" if given else "image"
    if not (image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info):
        raise ConfigError(
            "mask must have transparency: a PNG with an alpha channel, transparent (alpha 0) where the image is edited."
            if given
            else "image has no transparency and no mask was sent: send a mask, a PNG transparent where the image is "
            "edited, or an image transparent there.",
            field="mask",
        )
    try:
        alpha = image.convert("RGBA").getchannel("A")
    except Exception as error:  # a transparency entry Pillow cannot apply: the client's file, not a server error
        raise ConfigError(f"{what}'s transparency is unreadable ({error}); send an RGBA PNG.", field="mask") from None
    if alpha.getextrema()[0] >= OPAQUE:
        raise ConfigError(
            f"{what} has no transparent pixels, so nothing would be edited; make it transparent (alpha 0) where the "
            "image should change.",
            field="mask",
        )
    return ImageOps.invert(alpha)


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

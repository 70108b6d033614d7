"""OpenAI's POST /v1/images/edits against a real `aigc serve` subprocess (one for the module, with tokens and a 1 MiB
body limit), with the official `openai` package as the client and a tiny inpainting SD model in its --models: the
mask's transparency (OpenAI: transparent = edit) becomes aigc's white = repaint, so an edit equals a local
aigc.generate with the inverted alpha as its mask and keeps every opaque pixel exactly (mask_blur=0); the image's
own transparency works without a mask; aigc's knobs ride as form fields, typed by their Params; every bad upload is
a one-line 4xx in OpenAI's error shape, a foreign page a 403, a wrong token a 401."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest

import aigc
from aigc.runtime.devices import DeviceManager

pytest.importorskip("fastapi")
pytest.importorskip("multipart")  # python-multipart: starlette's form parser
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402
from serving import TOKEN, server  # noqa: E402

MODEL = "tiny-sd-inpaint"
SIZE = 64
HOLE = (slice(16, 48), slice(8, 40))  # rows, columns: where the mask is transparent (OpenAI's "edit here")
FAST = {"steps": 2, "mask_blur": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sd_inpainting):
    models = tmp_path_factory.mktemp("edit-models")
    (models / MODEL).symlink_to(tiny_sd_inpainting)
    env = {**os.environ, "AIGC_TOKEN": TOKEN}
    with server(tmp_path_factory.mktemp("edits") / "data", models, "--max-body-mb", "1", env=env) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served}/v1", api_key=TOKEN, max_retries=0)


def picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def alpha(size: int = SIZE) -> np.ndarray:
    opaque = np.full((size, size), 255, dtype=np.uint8)
    opaque[HOLE] = 0
    return opaque


def png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, "PNG")
    return out.getvalue()


def black_png(width: int, height: int) -> bytes:
    """A 1-bit PNG: a few kilobytes on the wire, width x height pixels once decoded."""
    out = io.BytesIO()
    Image.new("1", (width, height), 0).save(out, "PNG", optimize=True)
    return out.getvalue()


def rgba(colour: np.ndarray, opacity: np.ndarray) -> bytes:
    return png(np.dstack([colour, opacity]), "RGBA")


def decoded(answer) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json))).convert("RGB")) for d in answer.data]


def test_an_edit_gives_n_images_equal_to_a_local_call_and_keeps_every_opaque_pixel(client, tiny_sd_inpainting):
    mask = rgba(np.zeros((SIZE, SIZE, 3), dtype=np.uint8), alpha())
    answer = client.images.edit(
        model=MODEL,
        image=("picture.png", png(picture()), "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="a red door",
        n=2,
        size=f"{SIZE}x{SIZE}",
        response_format="b64_json",
        extra_body={**FAST, "seed": 5, "strength": 0.9},
    )
    images = decoded(answer)
    assert len(images) == 2 and all(image.shape == (SIZE, SIZE, 3) for image in images)
    kept = alpha() == 255
    for image in images:
        assert np.array_equal(image[kept], picture()[kept])  # mask_blur=0: not one kept pixel moves
        assert not np.array_equal(image[~kept], picture()[~kept])  # and the transparent part was repainted
    white_repaints = Image.fromarray(255 - alpha())  # aigc's convention: the alpha inverted
    local = aigc.generate(
        "image",
        "a red door",
        model=tiny_sd_inpainting,
        n=2,
        seed=5,
        init_image=Image.fromarray(picture()),
        mask=white_repaints,
        strength=0.9,
        width=SIZE,
        height=SIZE,
        manager=DeviceManager("cpu"),
        **FAST,
    )
    assert all(np.array_equal(a, np.asarray(b.data)) for a, b in zip(images, local, strict=True))


def test_without_a_mask_the_images_own_transparency_is_edited_and_knobs_are_typed(client):
    holed = rgba(picture(), alpha())
    answer = client.images.edit(
        model=MODEL,
        image=("holed.png", holed, "image/png"),
        prompt="a window",
        response_format="b64_json",
        extra_body={**FAST, "outpaint": [8, 0, 16, 0], "fast_loop": False, "inpaint_area": "masked"},
    )
    (image,) = decoded(answer)
    assert image.shape == (SIZE, SIZE + 24, 3)  # outpaint's list arrived as four whole numbers
    kept = alpha() == 255
    assert np.array_equal(image[:, 8 : 8 + SIZE][kept], picture()[kept])
    linked = client.images.edit(
        model=MODEL,
        image=("holed.png", holed, "image/png"),
        prompt="a window",
        output_format="webp",
        extra_body={**FAST, "seed": 1},
    )
    fetched = httpx.get(linked.data[0].url)  # a signed link, good without the token, converted as generations' are
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/webp"


def _opaque_mask_of(size: int) -> bytes:
    return rgba(np.zeros((size, size, 3), dtype=np.uint8), alpha(size))


@pytest.mark.parametrize(
    "files, fields, status, says",
    [
        ({"image": png(picture()), "mask": _opaque_mask_of(SIZE)}, {}, 400, "prompt is required"),
        ({"image": b"not an image at all"}, {"prompt": "x"}, 400, "image is not an image"),
        ({"image": png(picture()), "mask": _opaque_mask_of(32)}, {"prompt": "x"}, 400, "mask is 32x32 but"),
        ({"image": png(picture()), "mask": png(picture())}, {"prompt": "x"}, 400, "mask must have transparency"),
        ({"image": png(picture())}, {"prompt": "x"}, 400, "image has no transparency and no mask"),
        ({"image": png(picture()), "mask": png(alpha(), "L")}, {"prompt": "x"}, 400, "mask must have transparency"),
        ({"image[]": [png(picture())] * 2, "mask": _opaque_mask_of(SIZE)}, {"prompt": "x"}, 400, "edits one image"),
        ({"image": os.urandom(1_100_000)}, {"prompt": "x"}, 413, "over 1,048,576 bytes"),
        ({"image": black_png(9000, 8000)}, {"prompt": "x"}, 400, "the megapixels of image (9000x8000 pixels) is 72"),
        ({"image": png(picture()), "mask": black_png(9000, 8000)}, {"prompt": "x"}, 400, "megapixels of mask"),
        ({"image[]": [b"x"] * 18}, {"prompt": "x"}, 400, "Too many files"),
        ({"image": b"x"}, {"prompt": "x", **{f"k{i}": "1" for i in range(200)}}, 400, "Too many fields"),
        ({"image": b"x"}, {"prompt": "x" * 500_000}, 400, "Part exceeded maximum size"),
        ({"image": rgba(picture(), alpha())}, {"prompt": "x", "mask_blur": "soft"}, 400, "mask_blur='soft'"),
        ({"image": rgba(picture(), alpha())}, {"prompt": "x", "model": "tiny-gan"}, 404, "not served here"),
    ],
)
def test_a_bad_upload_is_a_one_line_4xx_in_openais_error_shape(served, files, fields, status, says):
    parts = [(name, (f"{name}.png", data)) for name, each in files.items() for data in _listed(each)]
    answer = httpx.post(
        f"{served}/v1/images/edits",
        files=parts,
        data={"model": MODEL, **FAST, **fields},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    error = answer.json()["error"]
    assert answer.status_code == status and says in error["message"], answer.text
    assert {"message", "type", "param", "code"} <= set(error) and "\n" not in error["message"]
    assert error["type"] in ("invalid_request_error", "not_found_error")


def _listed(value: bytes | list[bytes]) -> list[bytes]:
    return value if isinstance(value, list) else [value]


def test_the_openai_client_reads_the_refusals_as_its_own_errors(client, served):
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(model=MODEL, image=("a.png", png(picture())), mask=("m.png", png(picture())), prompt="x")
    assert refused.value.body["param"] == "mask" and "transparency" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="aigc edits one image"):
        client.images.edit(model=MODEL, image=[("a.png", png(picture())), ("b.png", png(picture()))], prompt="x")
    with pytest.raises(openai.APIStatusError) as large:
        client.images.edit(model=MODEL, image=("big.png", os.urandom(1_100_000)), prompt="x")
    assert large.value.status_code == 413 and large.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served}/v1", api_key="wrong-token-0123456789", max_retries=0).images.edit(
            model=MODEL, image=("a.png", rgba(picture(), alpha())), prompt="x"
        )


def test_a_form_is_taken_on_this_route_only_and_never_from_a_page_of_another_origin(served):
    token = {"Authorization": f"Bearer {TOKEN}"}
    jobs = httpx.get(f"{served}/v1/jobs", headers=token).json()["total"]
    form = {"files": {"image": ("a.png", rgba(picture(), alpha()))}, "data": {"model": MODEL, "prompt": "x", **FAST}}
    foreign = httpx.post(f"{served}/v1/images/edits", headers={**token, "Origin": "http://evil.example"}, **form)
    assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "permission_error"
    elsewhere = httpx.post(f"{served}/v1/jobs", headers=token, **form)
    assert elsewhere.status_code == 415 and "JSON" in elsewhere.json()["error"]["message"]
    as_json = httpx.post(f"{served}/v1/images/edits", headers=token, json={"model": MODEL, "prompt": "x"})
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.json()["error"]["message"]
    as_text = httpx.post(f"{served}/v1/images/edits", headers={**token, "Content-Type": "text/plain"}, content="x")
    assert as_text.status_code == 415 and "multipart/form-data" in as_text.json()["error"]["message"]
    assert httpx.get(f"{served}/v1/jobs", headers=token).json()["total"] == jobs  # none of them queued a thing

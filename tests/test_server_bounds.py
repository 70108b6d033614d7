"""Every request bounded, never a 500, against a real `aigc serve` subprocess with real clients (httpx, the `openai`
package): images measured from their headers before a pixel is decoded (a 17 KB PNG of 12000x12000 pixels), stop
strings bounded in number and length, a huge batch refused before it is planned, and bad input (JSON nested 1000
deep, `size: "²x²"`, `stream_options: [1]`, `Last-Event-ID: abc`...) a 4xx in the one error shape. The server's own
memory and CPU time (/proc) show the bound held: nothing was decoded or planned."""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import httpx
import pytest
from serving import served_models, server

import aigc
from aigc.errors import NoMetadataError

MB = 2**20
JSON = {"Content-Type": "application/json"}


def png(width: int, height: int) -> bytes:
    """A black 1-bit PNG: a few kilobytes on the wire, width x height pixels once decoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (width, height), 0).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    raw = png(12000, 12000)  # 144 megapixels
    assert len(raw) < 32_000
    return raw


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    models = served_models(tmp_path_factory.mktemp("bounds-models"), tiny_gpt2, tiny_dcgan)
    with server(tmp_path_factory.mktemp("bounds") / "data", models, "--max-body-mb", "64") as (url, process):
        yield url, process.pid


def rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS), in MiB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def cpu_s(pid: int) -> float:
    """CPU seconds the process has used (user + system, every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refused(response: httpx.Response, status: int, *words: str) -> dict:
    """The one error shape, with `status` and every word in its message."""
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "aigc_type", "param", "field", "code"}, error
    assert error["type"] == "invalid_request_error" and "\n" not in error["message"], error
    for word in words:
        assert word in error["message"], error["message"]
    return error


def still_up(url: str) -> None:
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


# --- images: measured from the header, before a pixel is decoded ------------------------------------------------
def test_a_huge_image_to_score_is_refused_from_its_header(served, huge_png):
    url, pid = served
    with httpx.Client(base_url=url, timeout=120) as c:
        broken = c.post("/v1/score", json={"items": [{"data": data_url(b"\x89PNG not really")}], "prompt": "x"})
        refused(broken, 422, "items[0]")  # the route's imports done: what follows is measured alone
        memory, cpu = rss_mb(pid), cpu_s(pid)
        answer = c.post("/v1/score", json={"items": [{"data": data_url(huge_png)}], "prompt": "a black square"})
        refused(answer, 422, "megapixels", "items[0]", "12000x12000", "AIGC_LIMIT_MEGAPIXELS")
        assert rss_mb(pid) - memory < 300  # decoded, the image alone is 144 MB as 1-bit and 576 MB as RGB
        assert cpu_s(pid) - cpu < 5  # decoding and scoring it took ~20 s of CPU

        # each image within the limit, but all of them together over it: refused before any is decoded
        nine = [{"data": data_url(png(8000, 8000))}] * 9  # 64 megapixels each, 576 in all
        answer = c.post("/v1/score", json={"items": nine, "prompt": "x"})
        refused(answer, 422, "the images of one score request", "576", "AIGC_LIMIT_MEGAPIXELS")
        assert rss_mb(pid) - memory < 300
    still_up(url)


def test_a_huge_init_image_data_url_is_refused_from_its_header(served, huge_png):
    url, pid = served
    memory = rss_mb(pid)
    answer = httpx.post(
        f"{url}/v1/jobs",
        timeout=120,
        json={"kind": "image", "backend": "diffusion", "prompt": "x", "params": {"init_image": data_url(huge_png)}},
    )
    error = refused(answer, 422, "megapixels", "12000x12000", "AIGC_LIMIT_MEGAPIXELS")
    assert error["field"] == "init_image"
    assert rss_mb(pid) - memory < 300
    still_up(url)


def test_a_huge_image_file_is_refused_by_load_and_as_an_init_image(huge_png, tmp_path, tiny_sd):
    path = tmp_path / "black.png"
    path.write_bytes(huge_png)
    for call in (lambda: aigc.load(path), lambda: aigc.generate("image", "x", model=tiny_sd, init_image=str(path))):
        with pytest.raises(aigc.ConfigError) as caught:
            call()
        message = str(caught.value)
        assert "megapixels" in message and "AIGC_LIMIT_MEGAPIXELS" in message and "12000x12000" in message, message
        assert "\n" not in message
    (tmp_path / "small.png").write_bytes(png(1000, 1001))
    with aigc.limits.set(megapixels=1):  # the limit in force decides: set explicitly, it replaces the 64 for reads
        with pytest.raises(aigc.ConfigError, match=r"1000x1001 pixels\) is 2, over the limit of 1"):
            aigc.load(tmp_path / "small.png")
    with aigc.limits.set(megapixels=2), pytest.raises(NoMetadataError):  # read whole: only its record is missing
        aigc.load(tmp_path / "small.png")


# --- stop strings: bounded in number and length, over HTTP too --------------------------------------------------
def test_stop_strings_over_the_limits_are_a_400(served):
    from openai import BadRequestError, OpenAI

    url, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0)
    chat = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(**chat, stop=[f"s{i}" for i in range(65)])
    assert "stop_strings" in str(caught.value) and "AIGC_LIMIT_STOP_STRINGS" in str(caught.value)
    with pytest.raises(BadRequestError, match="AIGC_LIMIT_STOP_CHARS"):
        client.chat.completions.create(**chat, stop=["x" * 1001])
    many = httpx.post(
        f"{url}/v1/chat/completions", timeout=120, json={**chat, "stop": [f"stop-{i}" for i in range(1_000_000)]}
    )  # 11 MB: 24.8 s before
    refused(many, 400, "1,000,000", "AIGC_LIMIT_STOP_STRINGS")
    assert client.chat.completions.create(**chat, stop=[f"s{i}" for i in range(64)]).choices[0].finish_reason
    still_up(url)


# --- batches: their size checked before they are planned ----------------------------------------------------------
def test_a_huge_batch_is_refused_before_it_is_planned(served):
    url, pid = served
    cpu = cpu_s(pid)
    answer = httpx.post(
        f"{url}/v1/jobs", timeout=300, json={"type": "batch", "kind": "text", "rows": ["x"] * 3_000_000}
    )
    refused(answer, 422, "rows", "3,000,000", "AIGC_LIMIT_BATCH_ASSETS")
    assert cpu_s(pid) - cpu < 4  # reading the body's JSON; planning those rows took ~10 s of CPU

    rows_x_n = {"type": "batch", "kind": "text", "rows": ["x"] * 60_000, "n": 2}
    refused(
        httpx.post(f"{url}/v1/jobs", timeout=300, json=rows_x_n), 422, "asks for", "120,000", "AIGC_LIMIT_BATCH_ASSETS"
    )
    own_n = {"type": "batch", "kind": "text", "rows": [{"prompt": "x", "n": 1000}] * 101}
    refused(httpx.post(f"{url}/v1/jobs", timeout=300, json=own_n), 422, "asks for", "101,000")
    still_up(url)


def test_a_huge_prompts_file_is_refused_before_it_is_planned(tmp_path):
    from aigc.runtime import registry

    registry.get("text").load()  # the backend's imports, done before the CPU time is read
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("x\n" * 3_000_000)
    cpu = time.process_time()
    with pytest.raises(aigc.ConfigError, match=r"rows in .*prompts.txt is 3,000,000.*AIGC_LIMIT_BATCH_ASSETS"):
        aigc.batch(prompts, tmp_path / "out", kind="text")
    assert time.process_time() - cpu < 4  # building and planning its rows took ~10 s
    assert not (tmp_path / "out").exists()


# --- never a 500: bad shapes and types are a 4xx in the one error shape ------------------------------------------
def nested(depth: int) -> str:
    return '{"items": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    "path", ["/v1/score", "/v1/jobs", "/v1/chat/completions", "/v1/assets/zip", "/v1/ratings/prefer"]
)
@pytest.mark.parametrize("depth", [100, 990, 1000, 5000])
def test_json_nested_deep_is_a_4xx(served, path, depth):
    url, _ = served
    answer = httpx.post(f"{url}{path}", content=nested(depth), headers=JSON, timeout=60)
    refused(answer, 400 if path.startswith("/v1/chat") else 422)
    still_up(url)


def test_an_image_size_in_unicode_digits_is_a_400(served):
    from openai import BadRequestError, OpenAI

    url, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0)
    for size in ("²x²", "١٢٨x١٢٨", "1e3x1e3"):
        with pytest.raises(BadRequestError, match="WIDTHxHEIGHT"):
            client.images.generate(model="tiny-gan.pth", prompt="a face", size=size)
    still_up(url)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"stream": True, "stream_options": [1]}, "stream_options"),
        ({"stream": False, "stream_options": "yes"}, "stream_options"),
        ({"stream": True, "stream_options": {"include_usage": [1]}}, "stream_options"),
        ({"messages": [{"role": ["user"], "content": "Hi"}]}, "messages"),
    ],
)
def test_openai_fields_of_the_wrong_type_are_a_400(served, body, field):
    url, _ = served
    queued = httpx.get(f"{url}/v1/jobs", timeout=10).json()["total"]
    chat = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **body}
    answer = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60)
    assert refused(answer, 400)["field"] == field
    assert httpx.get(f"{url}/v1/jobs", timeout=10).json()["total"] == queued  # refused before a job was queued
    still_up(url)


@pytest.mark.parametrize(
    "route, body",
    [
        ("/v1/audio/speech", {"model": "default", "voice": "default", "input": "Hi", "response_format": ["wav"]}),
        ("/v1/audio/speech", {"model": "default", "voice": "default", "input": "Hi", "response_format": {"a": 1}}),
        ("/v1/images/generations", {"model": "tiny-gan.pth", "prompt": "x", "response_format": ["url"]}),
        ("/v1/images/generations", {"model": "tiny-gan.pth", "prompt": "x", "output_format": {"png": 1}}),
    ],
)
def test_openai_format_fields_of_the_wrong_type_are_a_400(served, route, body):
    url, _ = served
    answer = httpx.post(f"{url}{route}", json=body, timeout=60)
    refused(answer, 400, "must be a string")
    still_up(url)


@pytest.mark.parametrize("last_event_id", ["abc", "²".encode("latin-1"), "--5", "9" * 40])
def test_a_bad_last_event_id_is_a_422_before_the_stream_begins(served, last_event_id):
    url, _ = served
    job = httpx.post(
        f"{url}/v1/jobs",
        timeout=60,
        json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "params": {"max_new_tokens": 1}},
    ).json()
    for path in ("/v1/events", f"/v1/jobs/{job['id']}/events"):
        answer = httpx.get(f"{url}{path}", headers={"Last-Event-ID": last_event_id}, timeout=30)
        refused(answer, 422, "Last-Event-ID")
    huge = httpx.get(f"{url}/v1/jobs/{job['id']}/events", params={"after": 10**30}, timeout=60)
    assert huge.status_code == 200 and "event:" not in huge.text  # nothing comes after the largest id; it ends
    still_up(url)

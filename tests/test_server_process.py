"""The real `aigc serve` as a subprocess on a free loopback port: kill -9 in the middle of jobs and restart (every
job ends with exactly its assets, the bytes an uninterrupted server makes), refusals to bind or serve without
tokens, and event streams that reconnect with Last-Event-ID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving import AIGC, TOKEN, free_port, served_models, server, wait_done  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    return served_models(tmp_path_factory.mktemp("served"), tiny_gpt2, tiny_dcgan)


def assets_of(url: str, job_id: str, headers: dict | None = None) -> list[bytes]:
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
    return [httpx.get(f"{url}{a['url']}", headers=headers).content for a in job["assets"]]


JOBS = [
    {
        "kind": "text",
        "prompt": ["The sea", "A lighthouse"],
        "n": 20,
        "seed": 11,
        "model": "tiny-gpt2",
        "params": {"max_new_tokens": 24},
    },
    {"kind": "image", "prompt": "a face", "backend": "gan", "model": "tiny-gan.pth", "n": 30, "seed": 5},
]


def test_kill_9_at_several_points_then_restart_ends_every_job_with_exactly_its_assets(tmp_path, models):
    with server(tmp_path / "clean", models) as (url, _):  # the uninterrupted twin
        ids = [httpx.post(f"{url}/v1/jobs", json=job).json()["id"] for job in JOBS]
        for job_id in ids:
            assert wait_done(url, job_id)["state"] == "done"
        expected = [assets_of(url, job_id) for job_id in ids]
    data, kills, port = tmp_path / "killed", 0, free_port()
    with server(data, models, port=port) as (url, process):
        ids = [httpx.post(f"{url}/v1/jobs", json=job).json()["id"] for job in JOBS]
    for target in (3, 9, 17, 26, 44):  # assets recorded (of 70) when the server is killed
        with server(data, models, port=port) as (url, process):
            while process.poll() is None:
                recorded = sum(len(httpx.get(f"{url}/v1/jobs/{i}").json()["assets"]) for i in ids)
                if recorded >= target:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    kills += 1
                    break
                time.sleep(0.02)
    assert kills == 5
    with server(data, models, port=port) as (url, _):
        for job_id, twin in zip(ids, expected, strict=True):
            job = wait_done(url, job_id)
            assert job["state"] == "done" and len(job["assets"]) == job["expected"] == len(twin)
            assert sorted(a["position"] for a in job["assets"]) == list(range(len(twin)))  # none lost, none twice
            assert (
                assets_of(url, job_id) == twin or job["kind"] == "image" and _same_pixels(assets_of(url, job_id), twin)
            )


def _same_pixels(ours: list[bytes], theirs: list[bytes]) -> bool:
    """PNG bytes carry their creation time; the pixels are what must match."""
    import io

    import numpy as np
    from PIL import Image

    return all(
        np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
        for a, b in zip(ours, theirs, strict=True)
    )


def test_a_public_bind_needs_tokens_and_tokens_are_required_then(tmp_path, models):
    refused = subprocess.run(
        [AIGC, "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "without a token" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    (tmp_path / "team.tokens").write_text(f"ana {TOKEN} admin\n")
    with server(tmp_path / "d", models, "--token-file", str(tmp_path / "team.tokens")) as (url, _):
        assert httpx.get(f"{url}/v1/jobs").status_code == 401
        assert httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/health", headers={"Host": "evil.example"}).status_code == 400  # host checked
        second = subprocess.run(
            [AIGC, "serve", "--port", str(free_port()), "--data", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
        )  # one server per queue
        assert second.returncode == 1 and "served by another aigc serve" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1


def test_an_event_stream_reconnects_with_last_event_id_and_misses_nothing(tmp_path, models):
    with server(tmp_path / "d", models) as (url, _):
        job = httpx.post(f"{url}/v1/jobs", json={**JOBS[1], "n": 12}).json()
        seen: list[dict] = []
        with httpx.stream("GET", f"{url}{job['events']}", timeout=60) as stream:
            for event in _events(stream.iter_lines()):
                seen.append(event)
                if len(seen) == 4:
                    break  # the client goes away (a laptop lid closes)
        with httpx.stream(
            "GET", f"{url}{job['events']}", headers={"Last-Event-ID": seen[-1]["id"]}, timeout=120
        ) as stream:
            seen += list(_events(stream.iter_lines()))
        with httpx.stream("GET", f"{url}{job['events']}", timeout=60) as stream:
            everything = list(_events(stream.iter_lines()))
    assert [e["id"] for e in seen] == [e["id"] for e in everything]  # nothing missed, nothing twice
    assert seen[-1]["event"] == "done" and sum(e["event"] == "asset" for e in seen) == 12


def _events(lines):
    current: dict = {}
    for line in lines:
        if not line:
            if "event" in current:
                yield current
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value


BAD = [
    {"kind": "text", "prompt": "x", "params": {"temperature": float("nan")}},
    {"kind": "image", "prompt": "x", "n": 10**9},
    {"kind": "audio", "prompt": "word " * 30_000},
    {"kind": "text", "prompt": "x", "seed": -1},
    {"kind": "text", "prompt": "\ud800"},
    {"type": "run", "yaml": "a: &x [1]\nsteps: *x\n"},
    {"type": "run", "recipe": "nope"},
    {"type": "batch", "kind": "text", "rows": ["x"], "n": 10**8},
    {"kind": "text", "prompt": "x", "model": "~root/x"},
    {"kind": "image", "prompt": "x", "backend": "gan", "params": {"size": 10**9}},
]


def test_every_bad_request_over_http_is_a_clear_4xx(tmp_path, models):
    with server(tmp_path / "d", models) as (url, _):
        for body in BAD:
            answer = httpx.post(
                f"{url}/v1/jobs", content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"}
            )
            assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text)
            assert answer.json()["error"]["message"], body
        assert httpx.get(f"{url}/v1/jobs").json()["total"] == 0
        assert os.path.exists(tmp_path / "d" / "aigc.db")

"""aigc serve in-process (FastAPI's TestClient runs the real app, its store and its worker): jobs, assets,
events, tokens and owners, and every bad request answered with a 4xx that names the field."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.runtime.devices import DeviceManager

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from aigc.server.app import Settings, create_app  # noqa: E402
from aigc.server.auth import Tokens  # noqa: E402

ALICE, BOB, ROOT = "alice-token-0123456789", "bob-token-0123456789ab", "root-token-0123456789ab"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2, tiny_dcgan, tiny_sd):
    """The server's --models directory: the tiny models under names requests may use."""
    directory = tmp_path_factory.mktemp("served-models")
    for name, target in (("tiny-gpt2", tiny_gpt2), ("tiny-gan.pth", tiny_dcgan), ("tiny-sd", tiny_sd)):
        (directory / name).symlink_to(target)
    return directory


@pytest.fixture(scope="module")
def manager():
    return DeviceManager("cpu")


def client(tmp_path: Path, models: Path, manager, tokens: Tokens | None = None, **settings) -> TestClient:
    app = create_app(
        Settings(
            data=tmp_path / "data",
            tokens=Tokens() if tokens is None else tokens,
            models=models,
            allowed_hosts=("testserver",),
            **settings,
        ),
        manager=manager,
    )
    return TestClient(app)


def wait(c: TestClient, job_id: str, headers: dict | None = None, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = c.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["state"] not in ("pending", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_generate_job_makes_the_assets_a_local_call_makes(tmp_path, models, manager, tiny_gpt2):
    with client(tmp_path, models, manager) as c:
        posted = c.post(
            "/v1/jobs",
            json={
                "kind": "text",
                "prompt": ["The sea", "A door"],
                "n": 6,
                "seed": 3,
                "model": "tiny-gpt2",
                "params": {"max_new_tokens": 6},
            },
        )
        assert posted.status_code == 202 and posted.json()["state"] == "pending" and posted.json()["expected"] == 12
        job = wait(c, posted.json()["id"])
        assert job["state"] == "done" and len(job["assets"]) == 12  # two calls of 8 and 4 outputs
        texts = [c.get(a["url"]).text for a in job["assets"]]
    local = aigc.generate(
        "text", ["The sea", "A door"], n=6, seed=3, model=tiny_gpt2, max_new_tokens=6, manager=manager
    )
    assert texts == [a.data for a in local]


def test_assets_are_served_by_id_with_etag_range_meta_and_thumbnails(tmp_path, models, manager):
    with client(tmp_path, models, manager) as c:
        job = wait(
            c,
            c.post(
                "/v1/jobs",
                json={
                    "kind": "image",
                    "prompt": "a face",
                    "backend": "gan",
                    "n": 2,
                    "model": "tiny-gan.pth",
                    "seed": 7,
                },
            ).json()["id"],
        )
        asset = job["assets"][0]
        whole = c.get(asset["url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "image/png"
        assert c.get(asset["url"], headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
        part = c.get(asset["url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == whole.content[:100]
        meta = c.get(asset["meta"]).json()
        assert meta["record"]["seed"] == 7 and meta["record"]["backend"] == "gan"
        thumb = c.get(f"/v1/assets/{asset['id']}/thumbnail?size=16")
        from PIL import Image

        assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 16
        assert c.get("/v1/assets/no-such-asset").status_code == 404
        assert c.get("/v1/assets/..%2F..%2Faigc.db").status_code == 404  # ids only: no path reaches the disk


def test_idempotency_key_returns_the_same_job(tmp_path, models, manager):
    request = {"kind": "image", "prompt": "x", "backend": "gan", "model": "tiny-gan.pth"}
    with client(tmp_path, models, manager) as c:
        first = c.post("/v1/jobs", json=request, headers={"Idempotency-Key": "retry-1"})
        again = c.post("/v1/jobs", json=request, headers={"Idempotency-Key": "retry-1"})
        other = c.post("/v1/jobs", json=request, headers={"Idempotency-Key": "retry-2"})
        assert first.status_code == 202 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert other.json()["id"] != first.json()["id"] and c.get("/v1/jobs").json()["total"] == 2


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"kind": "text", "prompt": "x", "params": {"temperature": "hot"}}, 422, "temperature"),
        ({"kind": "text", "prompt": "x", "params": {"temperature": float("inf")}}, 422, None),
        ({"kind": "text", "prompt": "x", "params": {"tempreature": 1}}, 422, "tempreature"),
        ({"kind": "text", "prompt": ""}, 422, "prompt"),
        ({"kind": "text", "prompt": "x\u0000"}, 422, "prompt"),
        ({"kind": "video", "prompt": "x"}, 422, "kind"),
        ({"kind": "text", "prompt": "x", "n": 1_000_000}, 422, "n"),
        ({"kind": "text", "prompt": "x", "n": "3"}, 422, "n"),
        ({"kind": "text", "prompt": "x", "best_of": 2, "seed": [1, 2]}, 422, "seed"),
        ({"kind": "text", "prompt": "x", "model": "/etc/passwd"}, 422, "model"),
        ({"kind": "text", "prompt": "x", "model": "../tiny-gpt2"}, 422, "model"),
        (
            {"kind": "image", "prompt": "x", "model": "tiny-sd", "params": {"init_image": "/etc/hosts"}},
            422,
            "init_image",
        ),
        ({"kind": "text", "prompt": "x", "colour": "red"}, 422, "colour"),
        ({"type": "run", "recipe": "../../etc/passwd"}, 422, "recipe"),
        ({"type": "run", "yaml": "steps: [\n"}, 422, None),
        ({"type": "run", "yaml": "steps:\n  - name: a\n    kind: text\n    prompt: '{}'\n"}, 422, None),
        ({"type": "batch", "kind": "text", "rows": []}, 422, "rows"),
        ({"type": "batch", "kind": "image", "backend": "gan", "rows": [{"prompt": "x", "seed": "abc"}]}, 422, None),
        ({"type": "teleport"}, 422, None),
        ([1, 2, 3], 422, None),
    ],
)
def test_bad_requests_are_4xx_with_the_field_never_500(tmp_path, models, manager, body, status, field):
    with client(tmp_path, models, manager) as c:
        answer = c.post(
            "/v1/jobs", content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["message"] and (field is None or error["field"] == field), error
        assert c.get("/v1/jobs").json()["total"] == 0  # nothing was queued


def test_malformed_bodies_large_bodies_and_full_queues(tmp_path, models, manager):
    with client(tmp_path, models, manager, max_body=4096, queue_per_owner=2, run_worker=False) as c:
        assert c.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
        big = c.post("/v1/jobs", json={"kind": "text", "prompt": "x" * 10_000})
        assert big.status_code == 413 and "4,096 bytes" in big.json()["error"]["message"]
        request = {"kind": "image", "prompt": "x", "backend": "gan", "model": "tiny-gan.pth"}
        assert [c.post("/v1/jobs", json=request).status_code for _ in range(3)] == [202, 202, 429]


def test_cancel_retry_list_and_filter(tmp_path, models, manager):
    with client(tmp_path, models, manager, run_worker=False) as c:  # no worker: jobs stay pending
        ids = [
            c.post(
                "/v1/jobs", json={"kind": "image", "prompt": f"x{i}", "backend": "gan", "model": "tiny-gan.pth"}
            ).json()["id"]
            for i in range(3)
        ]
        assert [c.get(f"/v1/jobs/{i}").json()["position"] for i in ids] == [0, 1, 2]
        assert c.post(f"/v1/jobs/{ids[1]}/cancel").json()["state"] == "cancelled"
        assert c.post(f"/v1/jobs/{ids[1]}/cancel").json()["state"] == "cancelled"  # harmless again
        assert c.get(f"/v1/jobs/{ids[2]}").json()["position"] == 1
        assert c.get("/v1/jobs?state=cancelled").json()["total"] == 1
        page = c.get("/v1/jobs?limit=2&offset=0").json()
        assert page["total"] == 3 and len(page["jobs"]) == 2
        assert c.post(f"/v1/jobs/{ids[0]}/retry").status_code == 409  # only failed or cancelled jobs
        assert c.post(f"/v1/jobs/{ids[1]}/retry").json()["state"] == "pending"
        assert c.get("/v1/jobs/nope").status_code == 404


def test_a_running_job_cancels_at_its_next_step(tmp_path, models, manager):
    with client(tmp_path, models, manager) as c:
        job = c.post(
            "/v1/jobs",
            json={"kind": "text", "prompt": "The sea", "n": 40, "model": "tiny-gpt2", "params": {"max_new_tokens": 60}},
        ).json()
        while c.get(f"/v1/jobs/{job['id']}").json()["state"] == "pending":
            time.sleep(0.05)
        c.post(f"/v1/jobs/{job['id']}/cancel")
        done = wait(c, job["id"])
        assert done["state"] == "cancelled" and len(done["assets"]) < 40


@pytest.mark.parametrize("private", [False, True], ids=["team", "private"])
def test_tokens_owners_and_admins(tmp_path, models, manager, private):
    """A team server (the default): everyone reads every job, only its owner or an admin changes it. --private:
    another user's job is not even said to exist."""
    tokens = Tokens((("alice", ALICE, False), ("bob", BOB, False), ("root", ROOT, True)))
    auth = {
        name: {"Authorization": f"Bearer {token}"} for name, token in (("alice", ALICE), ("bob", BOB), ("root", ROOT))
    }
    with client(tmp_path, models, manager, tokens=tokens, run_worker=False, private=private) as c:
        assert c.get("/health").status_code == 200  # the one open route
        for route in ("/v1/jobs", "/v1/backends", "/metrics", "/v1/events"):
            assert c.get(route).status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        job = c.post(
            "/v1/jobs",
            json={"kind": "image", "prompt": "x", "backend": "gan", "model": "tiny-gan.pth"},
            headers=auth["alice"],
        ).json()
        assert job["owner"] == "alice"
        seen = c.get(f"/v1/jobs/{job['id']}", headers=auth["bob"])
        assert seen.status_code == (404 if private else 200)
        cancel = c.post(f"/v1/jobs/{job['id']}/cancel", headers=auth["bob"])
        assert cancel.status_code == (404 if private else 403)
        assert c.post(f"/v1/jobs/{job['id']}/retry", headers=auth["bob"]).status_code == (404 if private else 403)
        assert c.get(f"/v1/jobs/{job['id']}", headers=auth["alice"]).json()["state"] == "pending"
        assert c.get("/v1/jobs", headers=auth["bob"]).json()["total"] == 0  # a user's queue: their own jobs
        assert c.get("/v1/jobs", headers=auth["root"]).json()["total"] == 1
        teammates = c.get("/v1/jobs?owner=alice", headers=auth["bob"])
        if private:  # --private: another user's list is refused, as docs/server.md says
            assert teammates.status_code == 403 and "--private" in teammates.json()["error"]["message"]
        else:
            assert teammates.json()["total"] == 1
        assert ALICE not in json.dumps(c.get(f"/v1/jobs/{job['id']}", headers=auth["alice"]).json())
        assert c.post(f"/v1/jobs/{job['id']}/cancel", headers=auth["root"]).json()["state"] == "cancelled"


def test_events_stream_and_resume_after_the_last_event_id(tmp_path, models, manager):
    with client(tmp_path, models, manager) as c:
        job = c.post(
            "/v1/jobs", json={"kind": "image", "prompt": "x", "backend": "gan", "n": 3, "model": "tiny-gan.pth"}
        ).json()
        wait(c, job["id"])
        with c.stream("GET", job["events"]) as stream:
            events = _parse(stream.iter_lines())
        kinds = [e["event"] for e in events]
        assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "done" and kinds.count("asset") == 3
        middle = events[len(events) // 2]["id"]
        with c.stream("GET", job["events"], headers={"Last-Event-ID": middle}) as stream:
            rest = _parse(stream.iter_lines())
        assert [e["id"] for e in rest] == [e["id"] for e in events if int(e["id"]) > int(middle)]


def _parse(lines) -> list[dict]:
    events, current = [], {}
    for line in lines:
        if not line:
            if "event" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    return events


def test_run_and_batch_jobs(tmp_path, models, manager):
    recipe = (
        "inputs: {topic: the sea}\nsteps:\n  - name: line\n    kind: text\n    model: tiny-gpt2\n"
        "    prompt: 'A line about {topic}'\n    params: {max_new_tokens: 4}\n  - name: face\n    kind: image\n"
        "    backend: gan\n    model: tiny-gan.pth\n    prompt: '{line}'\n    n: 2\n"
    )
    with client(tmp_path, models, manager) as c:
        run = wait(
            c, c.post("/v1/jobs", json={"type": "run", "yaml": recipe, "inputs": {"topic": "glass"}}).json()["id"]
        )
        assert run["state"] == "done" and [a["kind"] for a in run["assets"]] == ["text", "image", "image"]
        posted = c.post(
            "/v1/jobs",
            json={
                "type": "batch",
                "kind": "image",
                "backend": "gan",
                "model": "tiny-gan.pth",
                "rows": ["one", {"prompt": "two", "truncation": 0.5}],
                "n": 2,
                "seed": 4,
            },
        )
        assert posted.json()["expected"] == 4
        batch = wait(c, posted.json()["id"])
        assert batch["state"] == "done" and len(batch["assets"]) == 4


def test_an_earlier_image_or_inline_data_is_the_input_image(tmp_path, models, manager):
    from PIL import Image

    with client(tmp_path, models, manager) as c:
        first = wait(
            c,
            c.post(
                "/v1/jobs", json={"kind": "image", "prompt": "a castle", "model": "tiny-sd", "params": {"steps": 2}}
            ).json()["id"],
        )
        base = {
            "kind": "image",
            "prompt": "a castle at night",
            "model": "tiny-sd",
            "params": {"steps": 4, "strength": 0.5},
        }
        from_asset = c.post(
            "/v1/jobs", json={**base, "params": {**base["params"], "init_image": {"asset": first["assets"][0]["id"]}}}
        )
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "gray").save(buffer, "PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        inline = c.post("/v1/jobs", json={**base, "params": {**base["params"], "init_image": url}})
        for posted in (from_asset, inline):
            assert posted.status_code == 202, posted.text
            assert wait(c, posted.json()["id"])["state"] == "done"


def test_backends_say_every_knob_as_json_schema_and_metrics_count_jobs(tmp_path, models, manager):
    with client(tmp_path, models, manager, run_worker=False) as c:
        catalog = c.get("/v1/backends").json()
        knobs = catalog["kinds"]["text"]["backends"]["lm"]["knobs"]["properties"]
        assert knobs["temperature"] == {
            "description": "sampling temperature; 0 means greedy decoding",
            "type": "number",
            "default": 0.7,
            "minimum": 0.0,
            "maximum": 10.0,
        }
        assert (
            "streamer" not in knobs
            and catalog["kinds"]["image"]["backends"]["diffusion"]["image_input"] == "init_image"
        )
        assert "tiny-gpt2" in catalog["models"]["local"]
        c.post("/v1/jobs", json={"kind": "image", "prompt": "x", "backend": "gan", "model": "tiny-gan.pth"})
        text = c.get("/metrics").text
        assert "aigc_queue_depth 1.0" in text and 'aigc_jobs{state="pending"} 1.0' in text
        import re

        assert np.isfinite(float(re.search(r"^aigc_models_loaded (\S+)$", text, re.M).group(1)))


def _hold_the_worker(c: TestClient, headers: dict | None = None) -> str:
    """A long job that keeps the worker busy while a test queues the jobs it wants waiting together."""
    job = c.post(
        "/v1/jobs",
        headers=headers,
        json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "n": 1000, "params": {"max_new_tokens": 100}},
    ).json()["id"]
    while c.get(f"/v1/jobs/{job}", headers=headers).json()["state"] == "pending":
        time.sleep(0.02)
    return job


def test_jobs_differing_in_prompts_seeds_and_n_share_calls_and_get_what_they_get_alone(
    tmp_path, models, manager, tiny_gpt2
):
    requests = [
        {"prompt": "The sea", "seed": 1},
        {"prompt": ["A door", "Glass"], "n": 2, "seed": 50},
        {"prompt": "Rain", "n": 3, "seed": 7},
    ]
    with client(tmp_path, models, manager) as c:
        blocker = _hold_the_worker(c)
        ids = [
            c.post(
                "/v1/jobs", json={"kind": "text", "model": "tiny-gpt2", "params": {"max_new_tokens": 6}, **r}
            ).json()["id"]
            for r in requests
        ]
        apart = c.post(
            "/v1/jobs",
            json={
                "kind": "text",
                "model": "tiny-gpt2",
                "prompt": "The sea",
                "seed": 1,
                "params": {"max_new_tokens": 7},
            },
        ).json()["id"]  # another knob: its own call
        c.post(f"/v1/jobs/{blocker}/cancel")
        jobs = [wait(c, job_id) for job_id in ids]
        assert wait(c, apart)["merged_with"] == []
        for job, request in zip(jobs, requests, strict=True):
            assert sorted(job["merged_with"]) == sorted(set(ids) - {job["id"]})
            alone = aigc.generate(
                "text",
                request["prompt"],
                n=request.get("n", 1),
                seed=request["seed"],
                model=tiny_gpt2,
                max_new_tokens=6,
                manager=manager,
            )
            assert [c.get(a["url"]).text for a in job["assets"]] == [a.data for a in alone]
            meta = c.get(job["assets"][0]["meta"]).json()["record"]
            assert meta["params"] == alone[0].params and meta["info"] == alone[0].info
        events = c.get(f"/v1/jobs/{ids[0]}/events").text
        assert '"batched_with": 3' in events and '"call_outputs": 8' in events, events  # 1 + 4 + 3 outputs, one call


def test_owners_take_turns_so_a_long_queue_does_not_starve_a_single_job(tmp_path, models, manager):
    tokens = Tokens((("alice", ALICE, False), ("bob", BOB, False)))
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in (ALICE, BOB))
    with client(tmp_path, models, manager, tokens=tokens, merge_outputs=1) as c:
        blocker = _hold_the_worker(c, alice)
        queued = [
            c.post(
                "/v1/jobs",
                headers=alice,
                json={"kind": "image", "prompt": "a face", "backend": "gan", "model": "tiny-gan.pth", "seed": i},
            ).json()["id"]
            for i in range(5)
        ]
        single = c.post(
            "/v1/jobs",
            headers=bob,
            json={"kind": "image", "prompt": "a face", "backend": "gan", "model": "tiny-gan.pth"},
        ).json()["id"]
        c.post(f"/v1/jobs/{blocker}/cancel", headers=alice)
        starts = {job_id: wait(c, job_id, alice)["started"] for job_id in queued}
        bobs = wait(c, single, bob)["started"]
        assert sum(start < bobs for start in starts.values()) <= 1  # bob's one job ran second, not sixth

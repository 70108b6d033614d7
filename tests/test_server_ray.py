"""`aigc serve --engine ray --workers 2`: generation on two Ray actors while the queue stays in the server's
SQLite; jobs run on both actors at once and make exactly what the local engine makes."""

from __future__ import annotations

import numpy as np
import pytest

import aigc
from aigc.runtime.devices import DeviceManager

pytest.importorskip("fastapi")
pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from serving import served_models, server, wait_done  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    return served_models(tmp_path_factory.mktemp("served-ray"), tiny_gpt2, tiny_dcgan)


def test_two_ray_workers_make_what_the_local_engine_makes(tmp_path, models, tiny_gpt2, tiny_dcgan):
    import io

    from PIL import Image

    jobs = [
        {
            "kind": "text",
            "prompt": ["The sea", "A door"],
            "n": 2,
            "seed": 3,
            "model": "tiny-gpt2",
            "params": {"max_new_tokens": 6},
        },
        {"kind": "image", "prompt": "a face", "n": 3, "seed": 8, "model": "tiny-gan.pth"},
        {"kind": "text", "prompt": "Rain", "seed": 1, "model": "tiny-gpt2", "params": {"max_new_tokens": 9}},
        {"kind": "image", "prompt": "a face", "n": 2, "seed": 80, "model": "tiny-gan.pth", "params": {"size": 96}},
    ]
    with server(tmp_path / "data", models, "--engine", "ray", "--workers", "2") as (url, _):
        ids = [httpx.post(f"{url}/v1/jobs", json=job).json()["id"] for job in jobs]
        done = [wait_done(url, job_id) for job_id in ids]
        contents = [[httpx.get(f"{url}{a['url']}").content for a in job["assets"]] for job in done]
    assert all(job["state"] == "done" for job in done), done
    assert {job["worker"] for job in done} == {"worker-0", "worker-1"}  # both actors took jobs
    manager = DeviceManager("cpu")
    for job, files in zip(jobs, contents, strict=True):
        model = tiny_gpt2 if job["kind"] == "text" else tiny_dcgan
        local = aigc.generate(
            job["kind"],
            job["prompt"],
            n=job["n"] if "n" in job else 1,
            seed=job["seed"],
            model=model,
            manager=manager,
            **job.get("params", {}),
        )
        if job["kind"] == "text":
            assert [f.decode() for f in files] == [a.data for a in local]
        else:
            assert all(
                np.array_equal(np.asarray(Image.open(io.BytesIO(f))), np.asarray(a.data))
                for f, a in zip(files, local, strict=True)
            )

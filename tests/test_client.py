"""aigc.Client and the command line's --server against a real `aigc serve` subprocess: the same assets, files and
scores as the same work done here, and one clear line when the server cannot be reached or refuses the token."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.records import Progress

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving import AIGC, TOKEN, free_port, served_models, server  # noqa: E402

VOLATILE = ("created", "timings")
BO = "bo-token-0123456789abcdef"  # what two makings of one asset may differ in


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2, tiny_dcgan) -> Path:
    """The server's --models directory; local work names the same paths, so records match."""
    return served_models(tmp_path_factory.mktemp("served"), tiny_gpt2, tiny_dcgan)


@pytest.fixture(scope="module")
def url(tmp_path_factory, models) -> str:
    with server(tmp_path_factory.mktemp("data"), models) as (address, _):
        yield address


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AIGC_SERVER", "AIGC_TOKEN")}
    return subprocess.run([AIGC, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def ok(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = cli(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done


def steady(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def pixels(path_or_image) -> np.ndarray:
    from PIL import Image

    if isinstance(path_or_image, Path):
        with Image.open(path_or_image) as image:
            return np.asarray(image.convert("RGB"))
    return np.asarray(path_or_image)


def names(directory: Path) -> list[str]:
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def same_content(ours: Path, theirs: Path) -> None:
    """Two output directories hold the same files, and the same assets in them (text byte for byte, images pixel
    for pixel: a PNG's bytes carry its creation time)."""
    assert names(ours) == names(theirs)
    for name in names(ours):
        if name.endswith((".txt", "failures.jsonl")):
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
        elif name.endswith(".png"):
            assert np.array_equal(pixels(ours / name), pixels(theirs / name)), name


def close(ours: list[dict], theirs: list[dict]) -> bool:
    return len(ours) == len(theirs) and all(
        a.keys() == b.keys()
        and all(a[k] == b[k] if a[k] is None or b[k] is None else abs(a[k] - b[k]) < 1e-6 for k in a)
        for a, b in zip(ours, theirs, strict=True)
    )


def test_client_generate_gives_the_assets_a_local_call_gives(url, models, manager, tmp_path):
    client = aigc.Client(url)
    seen: list[Progress] = []
    remote = client.generate(
        "text", ["The sea", "A door"], model="tiny-gpt2", n=2, seed=3, max_new_tokens=6, progress=seen.append
    )
    local = aigc.generate(
        "text", ["The sea", "A door"], model=str(models / "tiny-gpt2"), n=2, seed=3, max_new_tokens=6, manager=manager
    )
    assert [a.data for a in remote] == [a.data for a in local] and [a.seed for a in remote] == [3, 4, 5, 6]
    assert [steady(a.record()) for a in remote] == [steady(a.record()) for a in local]
    assert seen and all(isinstance(p, Progress) for p in seen)

    faces = client.generate("image", "a face", backend="gan", model="tiny-gan.pth", n=3, seed=5)
    twins = aigc.generate(
        "image", "a face", backend="gan", model=str(models / "tiny-gan.pth"), n=3, seed=5, manager=manager
    )
    assert all(np.array_equal(pixels(a.data), pixels(b.data)) for a, b in zip(faces, twins, strict=True))
    saved = aigc.load(faces[1].save(tmp_path / "face.png"))
    assert saved.seed == 6 and np.array_equal(pixels(saved.data), pixels(twins[1].data))

    with pytest.raises(aigc.ConfigError, match="max_new_tokens=0 is out of range"):  # refused before it is queued
        client.generate("text", "x", model="tiny-gpt2", max_new_tokens=0)
    with pytest.raises(aigc.ConfigError, match="streams one output") as failed:  # the job's own typed error
        client.generate("text", "x", model="tiny-gpt2", n=2, max_new_tokens=2, streamer=print)
    assert failed.value.field == "streamer"


def test_client_score_equals_local_score(url, models, manager):
    client = aigc.Client(url)
    texts = client.generate("text", "The sea at night", model="tiny-gpt2", n=3, seed=1, max_new_tokens=8)
    assert close(client.score(texts), aigc.score(texts))  # sent as the server's asset ids
    faces = aigc.generate(
        "image", "a face", backend="gan", model=str(models / "tiny-gan.pth"), n=2, seed=2, manager=manager
    )
    assert close(client.score(faces), aigc.score(faces))  # made here: sent as data URLs with their prompts
    raw = ["a quiet harbour", "the sea is loud and blue"]
    assert close(client.score(raw, "the sea"), aigc.score(raw, "the sea"))


def test_generate_with_server_writes_the_files_the_local_command_writes(url, models, tmp_path):
    image = ("generate", "image", "a face", "--backend", "gan", "-n", "3", "--seed", "1")
    ok(*image, "--model", "tiny-gan.pth", "--server", url, "--out", str(tmp_path / "A"))
    ok(*image, "--model", str(models / "tiny-gan.pth"), "--out", str(tmp_path / "B"))
    text = ("generate", "text", "The sea", "-n", "2", "--seed", "3", "--max-new-tokens", "5")
    remote = ok(*text, "--model", "tiny-gpt2", "--server", url, "--out", str(tmp_path / "A"))
    local = ok(*text, "--model", str(models / "tiny-gpt2"), "--out", str(tmp_path / "B"))
    assert remote.stdout == local.stdout
    ours, theirs = tmp_path / "A", tmp_path / "B"
    assert "contact-sheet-a-face.png" in names(ours)
    same_content(ours, theirs)
    for name in names(ours):
        if name.endswith(".json"):
            assert steady(json.loads((ours / name).read_text())) == steady(json.loads((theirs / name).read_text()))
        elif name.startswith("image-"):
            assert steady(aigc.load(ours / name).record()) == steady(aigc.load(theirs / name).record())
    stream = ("generate", "text", "The sea", "--seed", "9", "--max-new-tokens", "8", "--stream")
    assert (
        ok(*stream, "--model", "tiny-gpt2", "--server", url).stdout
        == ok(*stream, "--model", str(models / "tiny-gpt2")).stdout
    )


RECIPE = """inputs:
  topic: a lighthouse
steps:
  - name: story
    kind: text
    model: tiny-gpt2
    prompt: "A story about {topic}"
    params: {max_new_tokens: 6}
  - name: face
    kind: image
    backend: gan
    model: tiny-gan.pth
    n: 2
    prompt: "{story}"
"""


def test_run_and_batch_with_server_write_the_files_a_local_run_and_batch_write(url, models, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)  # model names the server knows; here they are paths relative to the models directory
    sets = ("--set", "story.max_new_tokens=5", "--set", "topic=a door", "--seed", "3")  # the same seed, both ways
    ok("run", str(recipe), *sets, "--server", url, "--out", str(tmp_path / "run-A"))
    ok("run", str(recipe), *sets, "--out", str(tmp_path / "run-B"), cwd=models)
    assert names(tmp_path / "run-A") == [
        "face-0.png",
        "face-1.png",
        "index.html",
        "run.json",
        "story-0.json",
        "story-0.txt",
    ]
    same_content(tmp_path / "run-A", tmp_path / "run-B")

    prompts = tmp_path / "rows.csv"  # CSV rows are numbered from line 2; a gap; a bad cell fails its row alone
    prompts.write_text("prompt,seed,max_new_tokens\nThe sea,,4\nA door,7,\nBad row,,abc\n\nA cat,,3\n")
    batch = ("batch", str(prompts), "--kind", "text", "-n", "2", "--seed", "1")
    remote = ok(*batch, "--model", "tiny-gpt2", "--server", url, "--out", str(tmp_path / "batch-A"))
    local = ok(*batch, "--model", str(models / "tiny-gpt2"), "--out", str(tmp_path / "batch-B"))
    assert remote.stdout.replace("batch-A", "batch-B") == local.stdout
    assert "made 6, skipped 0 already done, failed 1" in remote.stdout
    same_content(tmp_path / "batch-A", tmp_path / "batch-B")
    manifests = [
        [steady(json.loads(line)) for line in (tmp_path / d / "manifest.jsonl").read_text().splitlines()]
        for d in ("batch-A", "batch-B")
    ]
    assert sorted(manifests[0], key=str) == sorted(manifests[1], key=str)
    again = ok(*batch, "--model", "tiny-gpt2", "--server", url, "--out", str(tmp_path / "batch-A"))
    assert "made 0, skipped 6 already done, failed 1" in again.stdout  # the same job, found again: a resume


def test_unreachable_server_and_refused_token_are_one_line_each(tmp_path, models):
    nobody = f"http://127.0.0.1:{free_port()}"
    done = cli("generate", "text", "x", "--server", nobody)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach the aigc server at {nobody} (connection "
        "refused); start one with `aigc serve` or check --server / AIGC_SERVER."
    ]
    (tmp_path / "team.tokens").write_text(f"ana {TOKEN}\nbo {BO}\n")
    rows = tmp_path / "rows.txt"
    rows.write_text("The sea\n")
    with server(tmp_path / "data", models, "--token-file", str(tmp_path / "team.tokens")) as (address, _):
        for token in ("wrong-token-0123456789", None):
            done = cli(
                "batch",
                str(rows),
                "--kind",
                "text",
                "--out",
                str(tmp_path / "b"),
                "--server",
                address,
                *(["--token", token] if token else []),
            )
            assert done.returncode == 1 and "Traceback" not in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "refused the request" in done.stderr

        ana = aigc.Client(address, TOKEN)
        assert ana.batch(rows, tmp_path / "ana", kind="text", model="tiny-gpt2", max_new_tokens=2).made == 1
        ana.generate("text", "x", model="tiny-gpt2", max_new_tokens=2)
        as_ana, as_bo = ({"Authorization": f"Bearer {t}"} for t in (TOKEN, BO))
        jobs = {j["type"]: j["id"] for j in httpx.get(f"{address}/v1/jobs", headers=as_ana).json()["jobs"]}
        files = f"{address}/v1/jobs/{jobs['batch']}/files"
        listed = [f["path"] for f in httpx.get(files, headers=as_ana).json()["files"]]
        assert "manifest.jsonl" in listed and not any(p.startswith(".") for p in listed)
        teammate = httpx.get(files, headers=as_bo)  # a team server: a teammate reads the run files (not --private)
        assert teammate.status_code == 200 and [f["path"] for f in teammate.json()["files"]] == listed
        assert httpx.get(f"{address}/v1/jobs/{jobs['generate']}/files", headers=as_ana).status_code == 404
        for sneaky in ("%2e%2e/%2e%2e/aigc.db", "..%2F..%2Faigc.db", ".aigc.lock", "%2Fetc%2Fpasswd"):
            assert httpx.get(f"{files}/{sneaky}", headers=as_ana).status_code == 404, sneaky
        asset = httpx.get(f"{address}/v1/jobs/{jobs['batch']}", headers=as_ana).json()["assets"][0]["id"]
        assert asset  # a teammate may score it too; an asset that does not exist is refused, naming the item
        refused = httpx.post(f"{address}/v1/score", headers=as_bo, json={"items": [{"asset": "0" * 16}]})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "items[0]"
        malformed = httpx.post(f"{address}/v1/score", headers=as_ana, json={"items": [{"text": "a"}, {"text": 3}]})
        assert malformed.status_code == 422 and malformed.json()["error"]["field"].startswith("items[1]")

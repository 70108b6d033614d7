"""The API the studio stands on, against a real `aigc serve` subprocess with two users' tokens: the studio page and
its headers, the gallery listing (filters, sorts, keyset paging, owners), ratings (per user in the server, and in
the team library), zip downloads with their manifest, best_of candidates, score meanings, and resuming events."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving import served_models, server, wait_done  # noqa: E402

ANA, BOB, CY = "ana-token-0123456789abcdef", "bob-token-0123456789abcdef", "cy-token-0123456789abcdefgh"
AS_ANA, AS_BOB, AS_CY = ({"Authorization": f"Bearer {token}"} for token in (ANA, BOB, CY))
TEXT = {
    "kind": "text",
    "prompt": "The lighthouse keeper",
    "model": "tiny-gpt2",
    "n": 3,
    "seed": 1,
    "params": {"max_new_tokens": 12},
}
IMAGE = {"kind": "image", "prompt": "a face in the fog", "backend": "gan", "model": "tiny-gan.pth", "n": 4, "seed": 2}
BEST = {
    "kind": "image",
    "prompt": "a person wearing sunglasses",
    "backend": "gan",
    "model": "tiny-gan.pth",
    "n": 2,
    "best_of": 3,
    "seed": 5,
}


def finished(url: str, job_id: str, headers: dict) -> dict:
    return wait_done(url, job_id, headers=headers)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    root = tmp_path_factory.mktemp("studio-api")
    models = served_models(root / "models", tiny_gpt2, tiny_dcgan)
    (root / "team.tokens").write_text(f"ana {ANA} admin\nbob {BOB}\n")
    import os

    env = {**os.environ, "AIGC_LIMIT_ZIP_ASSETS": "5"}
    with server(root / "data", models, "--token-file", str(root / "team.tokens"), env=env) as (url, _):
        jobs = {
            name: httpx.post(f"{url}/v1/jobs", json=body, headers=AS_BOB).json()["id"]
            for name, body in (("text", TEXT), ("image", IMAGE), ("best", BEST))
        }
        jobs["ana"] = httpx.post(
            f"{url}/v1/jobs", json={**IMAGE, "n": 2, "prompt": "ana's own"}, headers=AS_ANA
        ).json()["id"]
        views = {name: finished(url, job_id, AS_ANA) for name, job_id in jobs.items()}
        assert all(view["state"] == "done" for view in views.values()), views
        yield url, root / "data", views


def listing(url: str, headers: dict, **params) -> dict:
    answer = httpx.get(f"{url}/v1/assets", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_studio_page_is_served_with_a_policy_that_forbids_inline_scripts(served):
    url, _, _ = served
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and page.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/studio/' in attrs and not body.strip() for attrs, body in scripts)
    for name in re.findall(r'from "\./([a-z]+\.js)"', httpx.get(f"{url}/studio/studio.js").text) + ["studio.js"]:
        script = httpx.get(f"{url}/studio/{name}")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert not re.search(
            r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function", script.text
        ), name  # data goes in as text nodes only
    head = httpx.head(f"{url}/")  # as GET, without the body
    assert head.status_code == 200 and head.content == b"" and head.headers["content-security-policy"] == policy
    assert int(head.headers["content-length"]) == len(page.content)
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page.text).group(1)
    for path in (icon, "/favicon.ico"):
        answer = httpx.get(f"{url}{path}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"
        assert answer.text.startswith("<svg") and "<script" not in answer.text
    for bad in ("../aigc.db", "..%2Faigc.db", ".url-secret", "__init__.py", "nope.js"):
        assert httpx.get(f"{url}/studio/{bad}").status_code == 404, bad


def test_the_listing_filters_by_kind_words_job_owner_and_pages_with_a_cursor(served):
    url, _, views = served
    team = listing(url, AS_BOB, limit=100)  # a team server: everyone's gallery is the team's
    assert team["total"] == 3 + 4 + 2 + 2 and {a["owner"] for a in team["assets"]} == {"bob", "ana"}
    everything = listing(url, AS_BOB, owner="bob", limit=100)
    assert everything["total"] == 3 + 4 + 2 and {a["owner"] for a in everything["assets"]} == {"bob"}
    created = [a["created"] for a in everything["assets"]]
    assert created == sorted(created, reverse=True)  # newest first
    images = listing(url, AS_BOB, owner="bob", kind="image")["assets"]
    assert len(images) == 4 + 2 and all(a["kind"] == "image" and a["thumbnail"] for a in images)
    assert [a["prompt"] for a in listing(url, AS_BOB, q="fog face")["assets"]] == ["a face in the fog"] * 4
    assert listing(url, AS_BOB, q="fog rain")["total"] == 0  # every word must appear
    assert {a["job"] for a in listing(url, AS_BOB, job=views["text"]["id"])["assets"]} == {views["text"]["id"]}
    texts = listing(url, AS_BOB, kind="text", job=views["text"]["id"])["assets"]
    assert all(a["excerpt"] == httpx.get(f"{url}{a['url']}", headers=AS_BOB).text[:400] for a in texts)
    assert listing(url, AS_BOB, owner="ana")["total"] == 2 and listing(url, AS_ANA)["total"] == 11
    seen, cursor = [], None
    while True:  # two at a time: every asset once, in the same order as one page
        page = listing(url, AS_BOB, owner="bob", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [a["id"] for a in page["assets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [a["id"] for a in everything["assets"]]
    by_score = listing(url, AS_BOB, sort="score", min_score=0)["assets"]
    assert len(by_score) == 2 and by_score[0]["score"] >= by_score[1]["score"] > 0  # only best_of's are scored
    assert {a["job"] for a in by_score} == {views["best"]["id"]}
    oldest = listing(url, AS_BOB, owner="bob", order="asc", limit=1)["assets"][0]
    assert oldest["id"] == everything["assets"][-1]["id"]
    assert listing(url, AS_BOB, owner="bob", since="2000-01-01", until=str(time.time() + 60))["total"] == 9
    assert listing(url, AS_BOB, until="2000-01-01")["total"] == 0


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"sort": "random"}, "sort"),
        ({"kind": "video"}, "kind"),
        ({"min_score": "nan"}, "min_score"),
        ({"since": "yesterday"}, "since"),
        ({"cursor": "garbage"}, "cursor"),
        ({"job": "../x"}, "job"),
        ({"q": "w " * 20}, "q"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_listing_parameter_is_one_line_naming_it(served, params, field):
    url, _, _ = served
    answer = httpx.get(f"{url}/v1/assets", params=params, headers=AS_BOB)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and "\n" not in error["message"] and field in error["message"]


def test_a_best_of_job_records_every_candidate_its_scores_and_which_were_kept(served):
    url, _, views = served
    job = views["best"]
    candidates = job["progress"]["candidates"]
    assert len(candidates) == BEST["best_of"] and sum(c["kept"] for c in candidates) == BEST["n"]
    assert len({c["seed"] for c in candidates}) == BEST["best_of"]
    kept = {c["position"]: c for c in candidates if c["kept"]}
    for asset in job["assets"]:
        record = httpx.get(f"{url}{asset['meta']}", headers=AS_BOB).json()["record"]
        assert kept[asset["position"]]["score"] == pytest.approx(record["score"])
        assert kept[asset["position"]]["seed"] == record["seed"]
        assert kept[asset["position"]]["scores"] == pytest.approx(record["scores"])
    dropped = [c for c in candidates if not c["kept"]]
    assert all(c["score"] <= min(k["score"] for k in kept.values()) for c in dropped)


def test_every_score_part_an_asset_records_has_a_meaning(served):
    url, _, views = served
    scoring = httpx.get(f"{url}/v1/scoring", headers=AS_BOB).json()
    record = httpx.get(f"{url}{views['best']['assets'][0]['meta']}", headers=AS_BOB).json()["record"]
    assert set(scoring["parts"]) <= set(scoring["meanings"]) and "score" in scoring["meanings"]
    assert record["scores"] and set(record["scores"]) <= set(scoring["meanings"])
    assert httpx.get(f"{url}/v1/scoring").status_code == 401


def test_ratings_are_kept_per_user_by_the_server_and_in_the_team_library(served):
    from aigc.scoring.library import Library

    url, data, views = served
    asset = views["text"]["assets"][0]["id"]
    mine = httpx.put(
        f"{url}/v1/assets/{asset}/rating", json={"value": 1, "note": "<b>lovely</b> cadence"}, headers=AS_BOB
    )
    assert mine.status_code == 200, mine.text
    assert mine.json()["mine"]["value"] == 1 and mine.json()["mine"]["note"] == "<b>lovely</b> cadence"
    assert httpx.put(f"{url}/v1/assets/{asset}/rating", json={"value": -1}, headers=AS_ANA).status_code == 200
    again = httpx.get(f"{url}/v1/assets/{asset}/rating", headers=AS_BOB).json()  # after a reload, as the page does
    assert again["mine"]["value"] == 1 and (again["up"], again["down"]) == (1, 1)
    listed = next(a for a in listing(url, AS_BOB, job=views["text"]["id"])["assets"] if a["id"] == asset)
    assert listed["ratings"]["mine"]["value"] == 1 and listed["ratings"]["down"] == 1
    library = Library(data / "library")
    bobs = library.ratings(user="bob")
    assert [(r.type, r.value, r.item.ref, r.note) for r in bobs] == [("thumb", 1, asset, "<b>lovely</b> cadence")]
    text = httpx.get(f"{url}/v1/assets/{asset}", headers=AS_BOB).text
    assert bobs[0].item.kind == "text" and bobs[0].item.vector.size > 0 and bobs[0].item.prompt == TEXT["prompt"]
    assert text  # the rated item is the asset's own content (the library keys it by a hash of that)
    assert httpx.put(f"{url}/v1/assets/{asset}/rating", json={"value": 0}, headers=AS_BOB).json()["mine"] is None
    assert library.ratings(user="bob") == [] and len(library.ratings(user="ana")) == 1
    other = views["text"]["assets"][1]["id"]
    choice = httpx.post(f"{url}/v1/ratings/prefer", json={"better": asset, "worse": other}, headers=AS_BOB)
    assert choice.status_code == 200, choice.text
    pairs = [r for r in library.ratings(user="bob") if r.type == "pair"]
    assert [(p.item.ref, p.other.ref) for p in pairs] == [(asset, other)]


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"value": 2}, 422, "value"),
        ({"value": True}, 422, "value"),
        ({"value": 1, "note": "x" * 5000}, 422, "note"),
        ({"value": 1, "stars": 5}, 422, "stars"),
        ([1], 422, None),
    ],
)
def test_a_bad_rating_is_refused_and_nothing_is_stored(served, body, status, field):
    url, data, views = served
    asset = views["image"]["assets"][0]["id"]
    answer = httpx.put(f"{url}/v1/assets/{asset}/rating", json=body, headers=AS_BOB)
    assert answer.status_code == status and answer.json()["error"]["message"]
    if field:
        assert answer.json()["error"]["field"] == field
    assert httpx.get(f"{url}/v1/assets/{asset}/rating", headers=AS_BOB).json()["all"] == []


def test_a_teammates_assets_are_seen_and_rated_as_oneself_but_their_jobs_change_only_by_them(served):
    url, _, views = served
    anas_job = views["ana"]["id"]
    anas = views["ana"]["assets"][0]["id"]
    meta = httpx.get(f"{url}/v1/assets/{anas}/meta", headers=AS_BOB)
    assert meta.status_code == 200 and meta.json()["owner"] == "ana"
    assert (
        httpx.get(f"{url}/v1/assets/{anas}", headers=AS_BOB).content
        == httpx.get(f"{url}/v1/assets/{anas}", headers=AS_ANA).content
    )
    assert httpx.get(f"{url}/v1/assets/{anas}/thumbnail", headers=AS_BOB).status_code == 200
    assert httpx.get(f"{url}/v1/jobs/{anas_job}", headers=AS_BOB).json()["owner"] == "ana"
    with httpx.stream("GET", f"{url}/v1/jobs/{anas_job}/events", headers=AS_BOB, timeout=60) as events:
        assert events.status_code == 200 and "event: done" in "\n".join(events.iter_lines())
    rated = httpx.put(f"{url}/v1/assets/{anas}/rating", json={"value": 1}, headers=AS_BOB)
    assert rated.status_code == 200 and rated.json()["mine"]["user"] == "bob"
    assert httpx.get(f"{url}/v1/assets/{anas}/rating", headers=AS_ANA).json()["mine"] is None  # bob's, not ana's
    zipped = httpx.post(f"{url}/v1/assets/zip", json={"ids": [anas]}, headers=AS_BOB)
    assert zipped.status_code == 200 and len(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == 2
    for verb in ("cancel", "retry"):
        refused = httpx.post(f"{url}/v1/jobs/{anas_job}/{verb}", headers=AS_BOB)
        assert refused.status_code == 403 and "only its owner or an admin" in refused.json()["error"]["message"]
    assert {j["owner"] for j in httpx.get(f"{url}/v1/jobs", headers=AS_BOB).json()["jobs"]} == {"bob"}  # his queue
    assert httpx.get(f"{url}/v1/assets").status_code == 401


def png_url(image) -> str:
    import base64

    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def preview(url: str, body, headers: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/control/preview", json=body, headers=headers, timeout=60)


def test_the_control_preview_is_the_map_a_controlnet_sees_at_the_images_size(served):
    from PIL import Image, ImageDraw

    url, _, views = served
    bobs, anas = views["image"]["assets"][0]["id"], views["ana"]["assets"][0]["id"]
    size = Image.open(io.BytesIO(httpx.get(f"{url}/v1/assets/{bobs}", headers=AS_BOB).content)).size
    for asset in (bobs, anas):  # a teammate's image too, on a team server (as it may be an input)
        answer = preview(url, {"image": {"asset": asset}, "preprocess": "canny"}, AS_BOB)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", answer.text
        assert Image.open(io.BytesIO(answer.content)).size == size
    drawing = Image.new("RGB", (40, 24), "white")
    ImageDraw.Draw(drawing).rectangle((10, 6, 30, 18), fill="black")
    for name, options in (("canny", {"low": 50, "high": 150}), ("invert", {}), ("tile", {"down": 4.0})):
        answer = preview(url, {"image": png_url(drawing), "preprocess": name, "options": options}, AS_BOB)
        assert answer.status_code == 200, answer.text
        mapped = Image.open(io.BytesIO(answer.content)).convert("L")
        assert mapped.size == (40, 24), name
        if name == "canny":  # white edges on black, round the rectangle and nowhere else
            levels = set(mapped.tobytes())
            assert levels == {0, 255} and mapped.getpixel((2, 2)) == 0 and mapped.getpixel((20, 12)) == 0
        if name == "invert":
            assert mapped.getpixel((2, 2)) == 0 and mapped.getpixel((20, 12)) == 255
    given = preview(url, {"image": png_url(drawing)}, AS_BOB)  # preprocess "none": the image as given
    assert (
        given.status_code == 200 and Image.open(io.BytesIO(given.content)).convert("RGB").tobytes() == drawing.tobytes()
    )
    assert preview(url, {"image": {"asset": bobs}}, {}).status_code == 401


def test_the_preview_endpoint_is_declared_with_its_body_in_the_schema(served):
    url, _, _ = served
    operation = httpx.get(f"{url}/openapi.json", headers=AS_BOB).json()["paths"]["/v1/control/preview"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] and set(body["properties"]) == {"image", "preprocess", "options"}
    assert body["required"] == ["image"] and "image/png" in operation["responses"]["200"]["content"]


IMG = {"asset": "IMAGE"}  # the test's image asset (TEXT: its text asset), filled in below


@pytest.mark.parametrize(
    "body, status, field, words",
    [
        ({"image": IMG, "preprocess": "sobel"}, 422, "preprocess", "'none', 'canny', 'scribble', 'tile' or 'invert'"),
        ({"image": IMG, "preprocess": "canny", "options": {"name": 1}}, 422, "options", "no option 'name'"),
        ({"image": IMG, "preprocess": "canny", "options": {"low": 300}}, 422, "options", "from 0 to 255"),
        ({"image": IMG, "preprocess": "canny", "options": {"low": 200, "high": 100}}, 422, "options", "at most high"),
        ({"image": IMG, "preprocess": "invert", "options": {"low": 1}}, 422, "options", "takes no options"),
        ({"image": IMG, "preprocess": "canny", "options": {"low": "9"}}, 422, "options", "a whole number"),
        ({"image": "/etc/passwd"}, 422, "image", "never a path"),
        ({"image": {"asset": "IMAGE", "path": "/etc"}}, 422, "image", "never a path"),
        ({"image": "data:image/png;base64,bm90IGFuIGltYWdl"}, 422, "image", "not a readable image"),
        ({"image": {"asset": "0123abcd"}}, 404, None, "no asset '0123abcd'"),
        ({"image": None}, 422, "image", "data URL"),
        ({"image": {"asset": "TEXT"}, "preprocess": "canny"}, 422, "image", "a control image is an image"),
        ({"image": IMG, "size": 2}, 422, "size", "Extra inputs"),
        ({}, 422, "image", "required"),
        ([1], 422, None, "valid dictionary"),
    ],
)
def test_a_bad_preview_request_is_one_line_in_the_error_shape(served, body, status, field, words):
    url, _, views = served
    ids = {"TEXT": views["text"]["assets"][0]["id"], "IMAGE": views["image"]["assets"][0]["id"]}
    image = body.get("image") if isinstance(body, dict) else None
    if isinstance(image, dict) and image.get("asset") in ids:
        body = {**body, "image": {**image, "asset": ids[image["asset"]]}}
    answer = preview(url, body, AS_BOB)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and "\n" not in error["message"] and words in error["message"], error


def test_a_huge_control_image_is_refused_from_its_header(served):
    from PIL import Image

    url, _, _ = served
    huge = png_url(Image.new("1", (12000, 12000), 0))  # 144 megapixels in a few kilobytes
    assert len(huge) < 64_000
    started = time.monotonic()
    answer = preview(url, {"image": huge, "preprocess": "canny"}, AS_BOB)
    assert answer.status_code == 422 and time.monotonic() - started < 10, answer.text
    error = answer.json()["error"]
    assert error["field"] == "image" and "megapixels" in error["message"] and "12000x12000" in error["message"]


def test_the_catalog_says_which_backend_runs_each_of_the_servers_models_and_the_preprocessors(served):
    url, _, _ = served
    catalog = httpx.get(f"{url}/v1/backends", headers=AS_BOB).json()
    image = catalog["kinds"]["image"]["backends"]
    assert image["gan"]["models"] == ["tiny-gan.pth"] and image["upscale"]["models"] == []
    assert image["diffusion"]["models"] == [] and catalog["kinds"]["text"]["backends"]["lm"]["models"] == ["tiny-gpt2"]
    assert catalog["models"]["controlnets"] == []
    canny = catalog["preprocessors"]["canny"]
    assert canny["help"] and canny["options"]["low"] == {
        "type": "integer",
        "default": 100,
        "minimum": 0,
        "maximum": 255,
    }
    assert set(catalog["preprocessors"]) == {"none", "canny", "scribble", "tile", "invert"}


@pytest.fixture(scope="module")
def private(tmp_path_factory, tiny_dcgan):
    """`aigc serve --private`: two users with an image each, and an admin."""
    root = tmp_path_factory.mktemp("studio-private")
    models = served_models(root / "models", tiny_dcgan=tiny_dcgan)
    (root / "team.tokens").write_text(f"ana {ANA} admin\nbob {BOB}\ncy {CY}\n")
    with server(root / "data", models, "--token-file", str(root / "team.tokens"), "--private") as (url, _):
        jobs = {
            who: httpx.post(f"{url}/v1/jobs", json={**IMAGE, "n": 1}, headers=headers).json()["id"]
            for who, headers in (("bob", AS_BOB), ("cy", AS_CY))
        }
        yield url, {who: finished(url, job_id, AS_ANA) for who, job_id in jobs.items()}


def test_a_private_server_shows_each_user_only_their_own(private):
    url, views = private
    cys_job, cys = views["cy"]["id"], views["cy"]["assets"][0]["id"]
    assert {a["owner"] for a in listing(url, AS_BOB)["assets"]} == {"bob"}
    assert {a["owner"] for a in listing(url, AS_ANA)["assets"]} == {"bob", "cy"}  # an admin sees all
    refused = httpx.get(f"{url}/v1/assets", params={"owner": "cy"}, headers=AS_BOB)
    assert refused.status_code == 403 and "--private" in refused.json()["error"]["message"]
    for path in (
        f"/v1/assets/{cys}",
        f"/v1/assets/{cys}/meta",
        f"/v1/assets/{cys}/thumbnail",
        f"/v1/assets/{cys}/rating",
        f"/v1/jobs/{cys_job}",
        f"/v1/jobs/{cys_job}/events",
    ):
        assert httpx.get(f"{url}{path}", headers=AS_BOB).status_code == 404, path  # not even said to exist
    assert httpx.put(f"{url}/v1/assets/{cys}/rating", json={"value": 1}, headers=AS_BOB).status_code == 404
    assert httpx.post(f"{url}/v1/assets/zip", json={"ids": [cys]}, headers=AS_BOB).status_code == 404
    assert httpx.post(f"{url}/v1/jobs/{cys_job}/cancel", headers=AS_BOB).status_code == 404
    scored = httpx.post(f"{url}/v1/score", json={"items": [{"asset": cys}]}, headers=AS_BOB)
    assert scored.status_code == 422 and scored.json()["error"]["field"] == "items[0]"
    asked = httpx.get(f"{url}/v1/jobs?owner=cy", headers=AS_BOB)
    assert asked.status_code == 403 and "--private" in asked.json()["error"]["message"]  # as the gallery's owner=
    assert {j["owner"] for j in httpx.get(f"{url}/v1/jobs?owner=bob", headers=AS_BOB).json()["jobs"]} == {"bob"}
    assert httpx.get(f"{url}/v1/assets/{cys}/meta", headers=AS_ANA).status_code == 200
    hidden = preview(url, {"image": {"asset": cys}, "preprocess": "canny"}, AS_BOB)
    assert hidden.status_code == 404 and hidden.json()["error"]["message"] == f"no asset {cys!r}"  # as every route
    assert preview(url, {"image": {"asset": cys}, "preprocess": "canny"}, AS_CY).status_code == 200


def test_a_selection_downloads_as_a_zip_with_its_manifest(served):
    url, _, views = served
    ids = [a["id"] for a in views["image"]["assets"][:3]] + [views["text"]["assets"][0]["id"]]
    answer = httpx.post(f"{url}/v1/assets/zip", json={"ids": ids}, headers=AS_BOB)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    manifest = [json.loads(line) for line in archive.read("manifest.jsonl").decode().splitlines()]
    assert [m["id"] for m in manifest] == ids
    for line in manifest:
        assert archive.read(line["file"]) == httpx.get(f"{url}/v1/assets/{line['id']}", headers=AS_BOB).content
        assert line["seed"] is not None and line["prompt"]
    too_many = httpx.post(
        f"{url}/v1/assets/zip",
        json={"ids": [a["id"] for a in views["image"]["assets"]] + [a["id"] for a in views["text"]["assets"]]},
        headers=AS_BOB,
    )
    assert too_many.status_code == 422 and "AIGC_LIMIT_ZIP_ASSETS" in too_many.json()["error"]["message"]
    for body in ({"ids": []}, {"ids": "abc"}, {}):
        assert httpx.post(f"{url}/v1/assets/zip", json=body, headers=AS_BOB).json()["error"]["field"] == "ids"


def test_signed_links_load_files_and_thumbnails_without_a_token_and_only_as_signed(served):
    url, _, _ = served
    image = listing(url, AS_BOB, kind="image", limit=1)["assets"][0]
    thumb = httpx.get(f"{url}{image['thumbnail']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert httpx.get(f"{url}{image['src']}").content == httpx.get(f"{url}{image['url']}", headers=AS_BOB).content
    forged = image["thumbnail"][:-4] + ("0000" if not image["thumbnail"].endswith("0000") else "1111")
    assert httpx.get(f"{url}{forged}").status_code == 401


def test_a_client_that_read_the_jobs_streams_from_their_last_event_and_misses_nothing(served):
    url, _, _ = served
    snapshot = httpx.get(f"{url}/v1/jobs", headers=AS_BOB).json()
    job = httpx.post(f"{url}/v1/jobs", json={**IMAGE, "n": 2, "seed": 9}, headers=AS_BOB).json()
    seen = []
    with httpx.stream(
        "GET", f"{url}/v1/events", headers={**AS_BOB, "Last-Event-ID": str(snapshot["last_event"])}, timeout=120
    ) as events:
        for line in events.iter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
            if line.startswith("data: ") and '"assets"' in line and job["id"] in line:
                break  # the new job's done event
    assert seen and min(seen) > snapshot["last_event"] and seen == sorted(seen)
    assert finished(url, job["id"], AS_BOB)["state"] == "done"
    assert httpx.get(f"{url}/v1/jobs/{job['id']}", headers=AS_BOB).json()["title"] == IMAGE["prompt"]


def test_an_old_database_gains_the_gallery_columns_and_ten_thousand_assets_page_by_index(tmp_path):
    from aigc.server.gallery import listing_sql, parse_query
    from aigc.server.store import Store

    path = tmp_path / "aigc.db"
    old = sqlite3.connect(path)  # the schema a 0.2 server wrote: assets without owner, prompt or score
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, type TEXT NOT NULL, kind TEXT,
            request TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
            expected INTEGER NOT NULL, progress TEXT NOT NULL DEFAULT '{}', error TEXT,
            cancel INTEGER NOT NULL DEFAULT 0, idempotency TEXT, seq INTEGER NOT NULL);
        CREATE TABLE assets (id TEXT PRIMARY KEY, job TEXT NOT NULL, position INTEGER NOT NULL,
            kind TEXT NOT NULL, path TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
            etag TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL, UNIQUE(job, position));""")
    old.execute(
        "INSERT INTO jobs VALUES ('j1', 'cleo', 'generate', 'image', '{}', 'done', 1, 1, 2, 10000, '{}', "
        "NULL, 0, NULL, 1)"
    )
    old.executemany(
        "INSERT INTO assets VALUES (?, 'j1', ?, 'image', 'x.png', 'image/png', 1, 'e', ?, ?)",
        [
            (f"{i:08x}", i, json.dumps({"prompt": f"face {i % 7}", "score": (i % 100) / 100}), 1000 + i // 3)
            for i in range(10_000)
        ],
    )
    old.commit()
    old.close()
    store = Store(path)
    try:
        row = store.query("SELECT owner, prompt, score FROM assets WHERE id='00000005'", [])[0]
        assert tuple(row) == ("cleo", "face 5", 0.05)
        for params in ({}, {"sort": "score"}, {"owner": "cleo"}):
            query = parse_query({**params, "limit": "500"})
            seen, cursor = [], None
            while True:
                if cursor:
                    query = parse_query({**params, "limit": "500", "cursor": cursor})
                sql, args, _, _ = listing_sql(query)
                rows = store.query(sql, args)
                seen += [(r["sort_key"], r["id"]) for r in rows[:500]]
                if len(rows) <= 500:
                    break
                from aigc.server.gallery import _encode_cursor

                cursor = _encode_cursor(query, rows[499]["sort_key"], rows[499]["id"])
            assert len(seen) == 10_000 and seen == sorted(seen, reverse=True), params  # each once, in order
            plan = " ".join(str(tuple(r)) for r in store.query(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, (params, plan)  # no sort of the whole table
    finally:
        store.close()
    assert Path(path).exists()

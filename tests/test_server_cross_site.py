"""Cross-site writes, the API schema and what browsers may do with answers, against a real `aigc serve` subprocess:
a write whose body is not declared JSON is a 415 and one from a page of another origin a 403, neither changing
anything (on aigc's routes, the OpenAI routes, ratings and zips), while the server's own pages, a --cors-origin
origin and clients that send no Origin (httpx, the `openai` package, aigc.Client) work as before; /openapi.json
follows the token rule and no Swagger page is served; every answer says nosniff and a text, or a format the client
chose, is a download. A page of another loopback port, in headless Chromium, tries the no-cors POST for real."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving import TOKEN, free_port, served_models, server, wait_done  # noqa: E402

LISTED = "http://studio.example:3000"  # the --cors-origin of the served fixture
EVIL = "http://evil.example"
TEXT = {
    "kind": "text",
    "prompt": "The lighthouse keeper",
    "model": "tiny-gpt2",
    "n": 1,
    "seed": 1,
    "params": {"max_new_tokens": 4},
}
IMAGE = {"kind": "image", "prompt": "a face", "backend": "gan", "model": "tiny-gan.pth", "n": 1, "seed": 2}
BATCH = {"type": "batch", "kind": "text", "rows": ["a door"], "model": "tiny-gpt2", "params": {"max_new_tokens": 4}}
CHAT = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "seed": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    """A default (tokenless, loopback) server with one origin listed, and a text, an image and a batch job done."""
    root = tmp_path_factory.mktemp("cross-site")
    models = served_models(root / "models", tiny_gpt2, tiny_dcgan)
    with server(root / "data", models, "--cors-origin", LISTED) as (url, _):
        views = {
            name: wait_done(url, httpx.post(f"{url}/v1/jobs", json=body).json()["id"])
            for name, body in (("text", TEXT), ("image", IMAGE), ("batch", BATCH))
        }
        assert all(view["state"] == "done" for view in views.values()), views
        yield (
            url,
            {
                "text": views["text"]["assets"][0]["id"],
                "image": views["image"]["assets"][0]["id"],
                "batch": views["batch"]["id"],
            },
        )  # two assets' ids, and a job's with files


def writes(ids: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(method, path, JSON body): a write on every family of routes that changes something."""
    return [
        ("POST", "/v1/jobs", TEXT),
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/v1/completions", {"model": "tiny-gpt2", "prompt": "Hi", "max_tokens": 3}),
        ("POST", "/v1/images/generations", {"model": "tiny-gan.pth", "prompt": "a face", "n": 1}),
        ("PUT", f"/v1/assets/{ids['text']}/rating", {"value": 1, "note": "forged"}),
        ("POST", "/v1/ratings/prefer", {"better": ids["text"], "worse": ids["text"], "note": "forged"}),
        ("POST", "/v1/assets/zip", {"ids": [ids["text"]]}),
        ("POST", "/v1/score", {"items": [{"text": "x"}]}),
        ("POST", f"/v1/jobs/{ids['batch']}/retry", {}),
    ]


def state(url: str, ids: dict[str, str]) -> tuple[int, dict]:
    """What a forged write would change: the number of jobs, and the text asset's ratings."""
    return httpx.get(f"{url}/v1/jobs").json()["total"], httpx.get(f"{url}/v1/assets/{ids['text']}/rating").json()


def assert_error(answer: httpx.Response, status: int, *words: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text)
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "aigc_type", "param", "field", "code"}, error
    assert all(word in error["message"] for word in words), error["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_declared_json_is_415_and_changes_nothing(served, content_type):
    url, ids = served
    before = state(url, ids)
    for method, path, body in writes(ids):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = httpx.request(
            method, f"{url}{path}", content=json.dumps(body), headers=headers
        )  # the body is JSON; only its declared type is wrong (or missing)
        assert_error(answer, 415, "Content-Type: application/json", content_type or "no Content-Type")
        assert answer.json()["error"]["type"] == "invalid_request_error"
    assert state(url, ids) == before


def test_a_write_from_a_page_of_another_origin_is_403_and_changes_nothing(served):
    url, ids = served
    port = url.rsplit(":", 1)[1]
    before = state(url, ids)
    for origin in (EVIL, f"http://127.0.0.1:{free_port()}", f"https://127.0.0.1:{port}", "null"):
        for method, path, body in writes(ids) + [("POST", f"/v1/jobs/{ids['batch']}/cancel", None)]:
            for content_type in ("application/json", "text/plain"):  # fetch with mode "no-cors" sends text/plain
                answer = httpx.request(
                    method, f"{url}{path}", json=body, headers={"Origin": origin, "Content-Type": content_type}
                )
                assert_error(answer, 403, f"a page of {origin}", f"--cors-origin {origin}")
                assert answer.json()["error"]["type"] == "permission_error"
    assert state(url, ids) == before


@pytest.mark.parametrize("origin", ["own", "own-localhost", LISTED, None])
def test_the_servers_own_pages_a_listed_origin_and_clients_without_one_may_write(served, origin):
    url, ids = served
    port = url.rsplit(":", 1)[1]
    own = {"own": url, "own-localhost": f"http://localhost:{port}"}
    headers = {"Origin": own.get(origin, origin)} if origin else {}
    if origin == "own-localhost":
        headers["Host"] = f"localhost:{port}"  # the page at http://localhost:PORT: its requests name that host
    jobs = httpx.get(f"{url}/v1/jobs").json()["total"]
    posted = httpx.post(
        f"{url}/v1/jobs", json=TEXT, headers={**headers, "Content-Type": "application/json; charset=utf-8"}
    )
    assert posted.status_code == 202, posted.text
    assert wait_done(url, posted.json()["id"])["state"] == "done"
    assert httpx.get(f"{url}/v1/jobs").json()["total"] == jobs + 1
    chat = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=120)
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant", chat.text
    rated = httpx.put(f"{url}/v1/assets/{ids['text']}/rating", json={"value": 1}, headers=headers)
    assert rated.status_code == 200 and rated.json()["mine"]["value"] == 1, rated.text
    assert httpx.put(f"{url}/v1/assets/{ids['text']}/rating", json={"value": 0}, headers=headers).status_code == 200
    zipped = httpx.post(f"{url}/v1/assets/zip", json={"ids": [ids["text"]]}, headers=headers)
    assert zipped.status_code == 200 and zipped.content[:2] == b"PK", zipped.text
    cancelled = httpx.post(f"{url}/v1/jobs/{posted.json()['id']}/cancel", headers=headers)  # no body at all
    assert cancelled.status_code == 200, cancelled.text
    if origin == LISTED:  # the browser reads the answer only with CORS's header
        assert zipped.headers["access-control-allow-origin"] == LISTED


def test_the_openai_package_and_aigc_client_still_work(served):
    import aigc

    openai = pytest.importorskip("openai")
    url, _ = served
    chat = openai.OpenAI(base_url=f"{url}/v1", api_key="local", timeout=120).chat.completions.create(**CHAT)
    assert chat.choices[0].message.role == "assistant"
    with aigc.Client(url) as team:
        story = team.generate("text", "A haiku", model="tiny-gpt2", seed=3, max_new_tokens=4)[0]
    assert story.kind == "text" and story.seed == 3


def test_the_cors_preflight_for_a_listed_origin_still_works(served):
    url, _ = served
    for method in ("POST", "PUT"):
        preflight = httpx.options(
            f"{url}/v1/jobs",
            headers={
                "Origin": LISTED,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == LISTED
        assert method in preflight.headers["access-control-allow-methods"]
    refused = httpx.options(f"{url}/v1/jobs", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def test_the_schema_follows_the_token_rule_and_no_swagger_page_is_served(served, tmp_path, tiny_gpt2):
    url, _ = served
    assert httpx.get(f"{url}/openapi.json").json()["paths"]  # a tokenless loopback server: open, as every route
    with server(tmp_path / "data", served_models(tmp_path / "models", tiny_gpt2), env=_env(AIGC_TOKEN=TOKEN)) as (
        guarded,
        _,
    ):
        assert_error(httpx.get(f"{guarded}/openapi.json"), 401, "bearer token")
        schema = httpx.get(f"{guarded}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert schema.status_code == 200 and "/v1/jobs" in schema.json()["paths"]
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                assert httpx.get(f"{guarded}{page}", headers=headers).status_code == 404, page
    for page in ("/docs", "/redoc"):
        assert_error(httpx.get(f"{url}{page}"), 404)


def test_every_answer_says_nosniff(served):
    url, ids = served
    files = httpx.get(f"{url}/v1/jobs/{ids['batch']}/files").json()["files"]
    assert files
    answers = [
        httpx.get(f"{url}/v1/assets/{ids['text']}"),
        httpx.get(f"{url}/v1/assets/{ids['text']}?format=md"),
        httpx.get(f"{url}/v1/assets/{ids['image']}"),
        httpx.get(f"{url}/v1/assets/{ids['image']}/thumbnail"),
        *(httpx.get(f"{url}/v1/jobs/{ids['batch']}/files/{file['path']}") for file in files),
        httpx.get(f"{url}/v1/assets/nope"),
        httpx.post(f"{url}/v1/jobs", content="x"),
        httpx.post(f"{url}/v1/jobs", json=TEXT, headers={"Origin": EVIL}),
        httpx.get(f"{url}/health"),
        httpx.get(f"{url}/metrics"),
        httpx.get(f"{url}/v1/jobs"),
        httpx.get(f"{url}/openapi.json"),
        httpx.get(f"{url}/"),
        httpx.get(url, headers={"Host": "elsewhere.example"}),
    ]
    for answer in answers:
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], (answer.request.url, answer.headers)
    assert {answer.status_code for answer in answers} >= {200, 400, 403, 404, 415}


def test_a_text_or_a_chosen_format_is_a_download_and_an_image_is_not(served):
    url, ids = served
    for query, kind in (("", "text"), ("?format=md", "text"), ("?format=webp", "image")):
        answer = httpx.get(f"{url}/v1/assets/{ids[kind]}{query}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-disposition"].startswith("attachment;"), (query, answer.headers)
    assert httpx.get(f"{url}/v1/assets/{ids['text']}?format=md").headers["content-type"].startswith("text/markdown")
    image = httpx.get(f"{url}/v1/assets/{ids['image']}")
    assert image.headers["content-type"] == "image/png"
    assert not image.headers.get("content-disposition", "inline").startswith("attachment"), image.headers


def test_a_page_of_another_port_in_chromium_cannot_post_a_job(served, tmp_path):
    """The attack as a browser makes it: a page of http://127.0.0.1:OTHER posts to the server with fetch's no-cors
    mode (text/plain, no preflight) and with a form; the server records no job and no rating."""
    chromium, chromedriver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("needs Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    url, ids = served
    chat = json.dumps(json.dumps(CHAT))  # a JS string literal of the chat request
    (tmp_path / "attack.html").write_text(f"""<!doctype html><title>attack</title>
<form id="form" method="POST" action="{url}/v1/jobs" enctype="text/plain" target="sink">
<input name='{{"kind": "text", "model": "tiny-gpt2", "prompt": "forged by a form' value=' x"}}'></form>
<iframe name="sink"></iframe>
<script>
const job = JSON.stringify({{kind: "text", prompt: "forged by fetch", model: "tiny-gpt2"}});
const rating = JSON.stringify({{value: -1, note: "forged"}});
Promise.allSettled([
  fetch("{url}/v1/jobs", {{method: "POST", mode: "no-cors", body: job, headers: {{"Content-Type": "text/plain"}}}}),
  fetch("{url}/v1/chat/completions", {{method: "POST", mode: "no-cors", body: {chat}}}),
  fetch("{url}/v1/jobs", {{method: "POST", body: job, headers: {{"Content-Type": "application/json"}}}}),
]).then((results) => {{
  document.title = "sent " + results.map((r) => r.status).join(",");
  document.getElementById("form").submit();
}});
</script>""")
    page_server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))
    )
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    before = state(url, ids)
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    try:
        driver.get(f"http://127.0.0.1:{page_server.server_address[1]}/attack.html")
        deadline = time.time() + 30
        while not driver.title.startswith("sent") and time.time() < deadline:
            time.sleep(0.1)
        assert driver.title == "sent fulfilled,fulfilled,rejected", driver.title  # opaque answers; CORS refuses
        time.sleep(2)  # the form's post, then a worker's chance to pick up anything queued
    finally:
        driver.quit()
        page_server.shutdown()
        page_server.server_close()
    assert state(url, ids) == before
    prompts = [job["title"] for job in httpx.get(f"{url}/v1/jobs", params={"limit": 500}).json()["jobs"]]
    assert not [prompt for prompt in prompts if "forged" in prompt], prompts


def _env(**extra: str) -> dict[str, str]:
    import os

    return {**os.environ, **extra}

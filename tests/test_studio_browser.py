"""The studio in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against a real
`aigc serve` subprocess with a token, on the tiny models and the speech pack: the token prompt, text, image and
audio jobs made from the form and found in the gallery, a reload mid-job that reattaches, the keyboard focus kept
in the queue as it updates, a rating found again after a reload, the server's message next to a bad knob, and a
hostile prompt shown as text.

With AIGC_SCREENSHOTS=DIR (`make screenshots`) the tests also save the docs' screenshots there, and the jobs
those pictures show run on the real packs (SmolLM2 for text, the face GAN, the Piper voice) rather than the tiny
random models, so the docs show real outputs; the assertions are the same either way."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("selenium.webdriver")
httpx = pytest.importorskip("httpx")

from browser import (  # noqa: E402
    MISSING,
    SHOTS,
    chromium,
    screenshot,
    shown,
    state_of,
    until_done,
    wait,
)
from browser import open_view as open_with_token  # noqa: E402

if MISSING:
    pytest.skip(
        f"the studio's browser tests need Debian's chromium and chromium-driver (apt-get install chromium "
        f"chromium-driver); missing: {MISSING}",
        allow_module_level=True,
    )

from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402
from serving import served_models, server  # noqa: E402

TOKEN = "dee-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = "<img src=x onerror=alert(1)>"
TEXT_MODEL, IMAGE_MODEL = ("pack:smollm2", "pack:gan-faces") if SHOTS else ("tiny-gpt2", "tiny-gan.pth")
TOKENS = 40 if SHOTS else 12  # new tokens of a text the pictures show
RECIPE = f"""inputs:
  topic: a lighthouse
steps:
  - name: story
    kind: text
    model: {TEXT_MODEL}
    n: 2
    prompt: "A tale of {{topic}}, in two sentences:"
    params: {{max_new_tokens: {TOKENS}}}
  - name: poster
    kind: image
    backend: gan
    model: {IMAGE_MODEL}
    prompt: "{{story}}"
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    root = tmp_path_factory.mktemp("studio")
    models = served_models(root / "models", tiny_gpt2, tiny_dcgan)
    (root / "team.tokens").write_text(f"dee {TOKEN}\n")
    pipelines = root / "pipelines"
    pipelines.mkdir()
    (pipelines / "short_story.yaml").write_text(RECIPE)
    with server(root / "data", models, "--token-file", str(root / "team.tokens"), "--pipelines", str(pipelines)) as (
        url,
        _,
    ):
        with chromium() as driver:
            yield url, driver


def open_view(driver, url: str, hash_: str) -> None:
    open_with_token(driver, url, hash_, TOKEN)


def make(
    driver,
    url: str,
    *,
    kind: str,
    prompt: str,
    backend: str | None = None,
    model: str | None = None,
    n: int | None = None,
    seed: int | None = None,
    best_of: int | None = None,
    knobs: dict | None = None,
    keyboard: bool = False,
) -> str:
    """Fill the Make form and submit it; the new job's id (from the page's own notice)."""
    open_view(driver, url, "#/make")
    wait(driver, lambda d: shown(d, "#make-prompt"))
    Select(driver.find_element(By.ID, "make-kind")).select_by_value(kind)
    if backend:
        Select(driver.find_element(By.ID, "make-backend")).select_by_value(backend)
    if model:
        Select(driver.find_element(By.ID, "make-model")).select_by_value(model)
    for field, value in (("make-n", n), ("make-seed", seed), ("make-best-of", best_of)):
        if value is not None:
            driver.find_element(By.ID, field).send_keys(str(value))
    for name, value in (knobs or {}).items():
        driver.find_element(By.ID, f"knob-{name}").send_keys(str(value))
    driver.execute_script("document.getElementById('toast').textContent = ''")
    box = driver.find_element(By.ID, "make-prompt")
    box.send_keys(prompt)
    if keyboard:
        box.send_keys(Keys.CONTROL, Keys.ENTER)
    else:
        driver.find_element(By.ID, "make-submit").click()
    notice = wait(driver, lambda d: re.search(r"Queued job ([0-9a-f]+)", d.find_element(By.ID, "toast").text), 60)
    return notice.group(1)


@pytest.fixture(scope="module")
def made(studio):
    """The jobs every test below looks at, made from the form: a text, an image and an audio job."""
    url, driver = studio
    jobs = {
        "text": make(
            driver,
            url,
            kind="text",
            prompt="A two-line poem about a lighthouse keeper",
            model=TEXT_MODEL,
            n=2,
            seed=3,
            knobs={"max_new_tokens": TOKENS},
            keyboard=True,
        ),
        "image": make(
            driver, url, kind="image", backend="gan", model=IMAGE_MODEL, prompt="a face in the fog", n=4, seed=1
        ),
        "audio": make(driver, url, kind="audio", backend="speech", prompt="Welcome to the studio.", seed=2),
    }
    for job_id in jobs.values():
        until_done(driver, job_id)
    return jobs


def test_the_page_asks_for_a_token_and_keeps_it_for_this_tab_only(studio):
    url, driver = studio
    driver.get(f"{url}/")
    dialog = wait(driver, lambda d: shown(d, "#token-dialog"))
    driver.find_element(By.ID, "token-input").send_keys("wrong-token-0123456789", Keys.ENTER)
    wait(driver, lambda d: "refused" in d.find_element(By.ID, "token-error").text)
    assert dialog.is_displayed()
    field = driver.find_element(By.ID, "token-input")
    field.clear()
    field.send_keys(TOKEN, Keys.ENTER)
    wait(driver, lambda d: shown(d, "#make-prompt"))
    assert driver.execute_script("return sessionStorage.getItem('aigc.token')") == TOKEN
    assert driver.execute_script("return localStorage.length") == 0 and TOKEN not in driver.get_cookies().__str__()
    icon = driver.execute_script(
        "const link = document.querySelector('link[rel=icon]');"
        "return fetch(link.href).then(r => [r.status, r.headers.get('content-type')])"
    )
    assert icon == [200, "image/svg+xml"]
    missing = [entry["message"] for entry in driver.get_log("browser") if "404" in entry["message"]]
    assert not missing  # nothing the page loads is missing (the wrong token's 401 is expected)


def test_text_image_and_audio_jobs_made_from_the_form_land_in_the_gallery(studio, made):
    url, driver = studio
    for job_id in made.values():
        assert (
            driver.execute_script(
                "return document.querySelector(arguments[0]).value", f'#queue-list li[data-job="{job_id}"] progress'
            )
            == 1
        )
    open_view(driver, url, "#/gallery")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery-grid .card")) >= 7)
    cards = driver.find_elements(By.CSS_SELECTOR, "#gallery-grid .card")
    kinds = [card.get_attribute("data-kind") for card in cards]
    assert kinds.count("text") == 2 and kinds.count("image") == 4 and kinds.count("audio") == 1
    wait(
        driver,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('.card.image img')].every(i => i.complete && i.naturalWidth > 0)"
        ),
    )
    wait(
        driver,
        lambda d: d.execute_script(
            "const a = document.querySelector('.card.audio audio'); return a && a.readyState >= 1 && a.duration > 0"
        ),
    )
    texts = [c.find_element(By.CSS_SELECTOR, ".excerpt").text for c in cards if c.get_attribute("data-kind") == "text"]
    assert all(texts)
    screenshot(driver, "gallery", dark=True)
    Select(driver.find_element(By.ID, "filter-kind")).select_by_value("image")
    wait(
        driver,
        lambda d: (
            {c.get_attribute("data-kind") for c in d.find_elements(By.CSS_SELECTOR, "#gallery-grid .card")} == {"image"}
        ),
    )
    assert "kind=image" in driver.current_url


def test_a_reload_mid_job_reattaches_to_its_progress(studio, made):
    url, driver = studio
    job_id = make(
        driver,
        url,
        kind="text",
        prompt="A long night at sea",
        model="tiny-gpt2",
        n=16,
        seed=4,
        knobs={"max_new_tokens": 48},
    )
    bar = f'#queue-list li[data-job="{job_id}"] progress'

    def fraction(d):
        value = d.execute_script(
            "const bar = document.querySelector(arguments[0]);return bar && bar.hasAttribute('value') ? bar.value : 0",
            bar,
        )
        return float(value)

    wait(driver, lambda d: 0 < fraction(d) < 1 and state_of(d, job_id) == "running")
    driver.refresh()  # the lid closes and opens: the page starts again from the server's state
    wait(driver, lambda d: state_of(d, job_id) is not None)
    assert state_of(driver, job_id) == "running"  # reattached to the job while it still runs
    seen = []
    wait(driver, lambda d: seen.append(fraction(d)) or 0 < seen[-1] < 1 or state_of(d, job_id) == "done")
    screenshot(driver, "queue", scroll_to="#queue")  # a job running live, after the reload
    wait(driver, lambda d: seen.append(fraction(d)) or state_of(d, job_id) == "done")
    assert fraction(driver) == 1 and any(0 < value < 1 for value in seen)  # live progress after the reload
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH).json()
    assert job["state"] == "done" and len(job["assets"]) == 16


def test_a_rating_is_stored_and_found_again_after_a_reload(studio, made):
    url, driver = studio
    asset = httpx.get(f"{url}/v1/jobs/{made['image']}", headers=AUTH).json()["assets"][0]["id"]
    open_view(driver, url, f"#/asset/{asset}")
    wait(driver, lambda d: shown(d, "#rate-up"))
    driver.find_element(By.ID, "rating-note").send_keys("good light")
    driver.find_element(By.ID, "rate-up").click()
    wait(driver, lambda d: "Your rating: up" in d.find_element(By.ID, "rating-status").text, 120)
    driver.refresh()
    wait(driver, lambda d: shown(d, "#rate-up") and "Your rating: up" in d.find_element(By.ID, "rating-status").text)
    assert driver.find_element(By.ID, "rate-up").get_attribute("aria-pressed") == "true"
    assert driver.find_element(By.ID, "rate-down").get_attribute("aria-pressed") == "false"
    assert driver.find_element(By.ID, "rating-note").get_attribute("value") == "good light"
    stored = httpx.get(f"{url}/v1/assets/{asset}/rating", headers=AUTH).json()["mine"]
    assert stored["value"] == 1 and stored["note"] == "good light"


def test_a_bad_knob_shows_the_servers_message_next_to_the_field(studio):
    url, driver = studio
    before = httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"]
    open_view(driver, url, "#/make")
    wait(driver, lambda d: shown(d, "#make-prompt"))
    Select(driver.find_element(By.ID, "make-kind")).select_by_value("image")
    Select(driver.find_element(By.ID, "make-backend")).select_by_value("gan")
    driver.find_element(By.ID, "knob-truncation").send_keys("5")  # out of the knob's own range: caught here
    driver.find_element(By.ID, "make-prompt").send_keys("a face")
    driver.find_element(By.ID, "make-submit").click()
    wait(driver, lambda d: "at most 1" in d.find_element(By.ID, "error-truncation").text, 30)
    assert driver.find_element(By.ID, "knob-truncation").get_attribute("aria-invalid") == "true"
    driver.find_element(By.ID, "knob-truncation").clear()
    driver.find_element(By.ID, "knob-to_seed").send_keys("3")  # valid alone; the server says what it needs
    driver.find_element(By.ID, "make-submit").click()
    wait(driver, lambda d: "pass frames= too" in d.find_element(By.ID, "error-to_seed").text, 60)
    assert driver.find_element(By.ID, "knob-to_seed").get_attribute("aria-invalid") == "true"
    assert driver.find_element(By.ID, "error-truncation").text == ""
    assert httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"] == before  # neither was queued
    screenshot(driver, "make")


def test_a_hostile_prompt_renders_as_text_and_runs_nothing(studio):
    url, driver = studio
    job_id = make(driver, url, kind="text", prompt=HOSTILE, model="tiny-gpt2", seed=5, knobs={"max_new_tokens": 8})
    until_done(driver, job_id)
    titles = [a.text for a in driver.find_elements(By.CSS_SELECTOR, f'li[data-job="{job_id}"] .job-title')]
    assert titles == [HOSTILE]
    open_view(driver, url, f"#/gallery?job={job_id}")
    prompt = wait(driver, lambda d: shown(d, "#gallery-grid .card .prompt"))
    assert prompt.text == HOSTILE
    driver.find_element(By.CSS_SELECTOR, "#gallery-grid .card a").click()
    title = wait(driver, lambda d: shown(d, "h1.asset-title"))
    assert title.text == HOSTILE and HOSTILE in driver.find_element(By.ID, "asset-facts").text
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - a real alert() would be open now


def test_a_best_of_asset_shows_its_score_parts_their_meanings_and_every_candidate(studio):
    url, driver = studio
    job_id = make(
        driver,
        url,
        kind="image",
        backend="gan",
        model=IMAGE_MODEL,
        prompt="a person wearing sunglasses",
        n=2,
        best_of=4,
        seed=7,
    )
    until_done(driver, job_id)
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH).json()
    best = min(job["assets"], key=lambda a: a["position"])
    open_view(driver, url, f"#/asset/{best['id']}")
    table = wait(driver, lambda d: shown(d, "#score-breakdown"))
    parts = {row.get_attribute("data-part"): row for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
    record = httpx.get(f"{url}/v1/assets/{best['id']}/meta", headers=AUTH).json()["record"]
    assert set(parts) == {"score", *record["scores"]}  # every part and sub-part the record holds
    assert all(row.find_element(By.CSS_SELECTOR, ".meaning").text for row in parts.values())
    assert parts["score"].find_element(By.CSS_SELECTOR, ".num").text == f"{record['score']:.3f}"
    strip = driver.find_elements(By.CSS_SELECTOR, "#candidates .candidate")
    assert len(strip) == 4 and len(driver.find_elements(By.CSS_SELECTOR, "#candidates .candidate.kept")) == 2
    facts = driver.find_element(By.ID, "asset-facts").text
    assert str(record["seed"]) in facts and "gan" in facts
    screenshot(driver, "asset")
    screenshot(driver, "candidates", scroll_to="#candidates")


def test_again_remix_and_the_equivalent_cli_command(studio, made):
    url, driver = studio
    job = httpx.get(f"{url}/v1/jobs/{made['image']}", headers=AUTH).json()
    asset = job["assets"][1]
    open_view(driver, url, f"#/asset/{asset['id']}")
    wait(driver, lambda d: shown(d, "#act-again"))
    cli = driver.find_element(By.ID, "equivalent-cli").get_attribute("textContent")
    seed = httpx.get(f"{url}/v1/assets/{asset['id']}/meta", headers=AUTH).json()["record"]["seed"]
    assert cli.startswith(f"aigc generate image 'a face in the fog' --backend gan --model {IMAGE_MODEL}")
    assert f"--seed {seed}" in cli and f"--server {url}" in cli
    before = httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"]
    driver.find_element(By.ID, "act-again").click()
    wait(driver, lambda d: httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"] == before + 1, 30)
    again = httpx.get(f"{url}/v1/jobs?limit=1", headers=AUTH).json()["jobs"][0]
    request = httpx.get(f"{url}/v1/jobs/{again['id']}", headers=AUTH).json()["request"]
    assert {k: v for k, v in request.items() if k != "seed"} == {k: v for k, v in job["request"].items() if k != "seed"}
    driver.find_element(By.ID, "act-remix").click()
    prompt = wait(driver, lambda d: shown(d, "#make-prompt"))
    assert prompt.get_attribute("value") == "a face in the fog"
    assert driver.find_element(By.ID, "make-seed").get_attribute("value") == str(seed)
    assert Select(driver.find_element(By.ID, "make-backend")).first_selected_option.get_attribute("value") == "gan"


def test_a_chain_runs_from_its_inputs_form_and_shows_each_step_with_its_assets(studio):
    url, driver = studio
    open_view(driver, url, "#/chain")
    topic = wait(driver, lambda d: shown(d, "#chain-input-topic"))
    assert topic.get_attribute("value") == "a lighthouse"  # the recipe's default
    topic.clear()
    topic.send_keys("a glass city")
    driver.find_element(By.CSS_SELECTOR, "#chain-form button[type=submit]").click()
    wait(driver, lambda d: "#/chain/" in d.current_url)
    job_id = driver.current_url.rsplit("/", 1)[1]
    wait(
        driver,
        lambda d: (
            "· done" in d.find_element(By.CSS_SELECTOR, "main p.hint").text
            and len(d.find_elements(By.CSS_SELECTOR, ".chain-step[data-step=poster] .card")) == 2
        ),
    )
    page = driver.execute_script("""  // one look at the page (it re-renders as events arrive)
        const q = (css) => [...document.querySelectorAll(css)];
        return {steps: q('.chain-step').map(s => s.dataset.step),
                stories: q('.chain-step[data-step=story] .card .prompt').map(p => p.textContent),
                poster: document.querySelector('.chain-step[data-step=poster]').textContent,
                links: q('.chain-step[data-step=poster] .card a').map(a => a.getAttribute('href'))};""")
    assert page["steps"] == ["story", "poster"]
    assert page["stories"] == ["A tale of a glass city, in two sentences:"] * 2
    assert "from story-0" in page["poster"] and "from story-1" in page["poster"]
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH).json()
    assert job["request"]["inputs"] == {"topic": "a glass city"} and len(job["assets"]) == 4
    assert {link.rsplit("/", 1)[1] for link in page["links"]} <= {a["id"] for a in job["assets"]}
    screenshot(driver, "chain")


def test_a_focused_cancel_button_stays_focused_as_its_job_updates_and_retry_takes_over(studio):
    """(Last, so the gallery's counts above never see this job.)"""
    url, driver = studio
    job_id = make(
        driver, url, kind="text", prompt="A slow tide", model="tiny-gpt2", n=24, seed=6, knobs={"max_new_tokens": 64}
    )
    row = f'#queue-list li[data-job="{job_id}"]'
    wait(driver, lambda d: state_of(d, job_id) == "running" and shown(d, f"{row} [data-action=cancel]"))
    driver.execute_script("document.querySelector(arguments[0]).focus()", f"{row} [data-action=cancel]")

    def focused(d):
        return d.execute_script(
            "const el = document.activeElement, li = el.closest('li[data-job]');"
            "return li ? [li.dataset.job, el.dataset.action] : null"
        )

    stage = driver.find_element(By.CSS_SELECTOR, f"{row} .stage").text
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .stage").text != stage)  # its row was rebuilt
    assert focused(driver) == [job_id, "cancel"]
    ActionChains(driver).send_keys(Keys.ENTER).perform()  # cancel from the keyboard, on whatever has the focus
    wait(driver, lambda d: state_of(d, job_id) == "cancelled")
    assert focused(driver) == [job_id, "retry"]  # Cancel is gone; the row's Retry has the focus

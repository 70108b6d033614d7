"""The studio's image editing in a real headless Chromium against a real `aigc serve` subprocess with a token, on a
tiny random Stable Diffusion, a tiny ControlNet and a tiny RRDBNet upscaler: a mask painted with real mouse events
(its pixels mapped from the scaled canvas to the image's), inpainting that keeps every unpainted pixel, invert,
clear and the eraser, the control map previewed before a ControlNet job (from the asset or an upload), outpainting
that grows the image (its sides checked in the form first), upscaling (hidden, with a note, without an upscaler
model) and the hires fix at the asset's own seed.

With AIGC_SCREENSHOTS=DIR (`make screenshots`) the mask painter and the control preview are saved there; the image
painted over is then a face from the GAN pack instead of a tiny SD picture (the assertions are the same)."""

from __future__ import annotations

import base64
import io
import math
import time

import numpy as np
import pytest

pytest.importorskip("selenium.webdriver")
httpx = pytest.importorskip("httpx")

from browser import MISSING, PHONE, SHOTS, chromium, open_view, screenshot, shown, wait  # noqa: E402

if MISSING:
    pytest.skip(
        f"the studio's browser tests need Debian's chromium and chromium-driver (apt-get install chromium "
        f"chromium-driver); missing: {MISSING}",
        allow_module_level=True,
    )

from PIL import Image  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402
from serving import server, wait_done  # noqa: E402

TOKEN = "eve-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "a lighthouse <b>on</b> a cliff"  # markup in a prompt stays text in every field it is put in
SOURCE = {"kind": "image", "prompt": PROMPT, "model": "tiny-sd", "seed": 3, "params": {"steps": 2}}
FACE = {
    "kind": "image",
    "backend": "gan",
    "model": "pack:gan-faces",
    "prompt": "a face",
    "seed": 1,
    "params": {"size": 128},
}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_sd, tiny_controlnet):
    from upscalers import rrdb_state, save

    root = tmp_path_factory.mktemp("studio-edit")
    models = root / "models"
    models.mkdir()
    (models / "tiny-sd").symlink_to(tiny_sd)
    (models / "tiny-controlnet").symlink_to(tiny_controlnet)
    save(rrdb_state(), models / "tiny-x4.pth")  # an RRDBNet x4, as Real-ESRGAN's files are laid out
    (root / "team.tokens").write_text(f"eve {TOKEN}\n")
    with server(root / "data", models, "--token-file", str(root / "team.tokens")) as (url, _), chromium() as driver:
        yield url, driver, models


@pytest.fixture(autouse=True)
def no_script_errors(studio):
    """After each test: the page threw nothing (refusals the server answered, 4xx, are the page's to show)."""
    _, driver, _ = studio
    driver.get_log("browser")
    yield
    errors = [
        e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and "status of 4" not in e["message"]
    ]
    assert not errors


def job(url: str, body: dict) -> dict:
    posted = httpx.post(f"{url}/v1/jobs", json=body, headers=AUTH)
    assert posted.status_code == 202, posted.text
    done = wait_done(url, posted.json()["id"], headers=AUTH)
    assert done["state"] == "done", done
    return done


def pixels(url: str, asset: str) -> np.ndarray:
    answer = httpx.get(f"{url}/v1/assets/{asset}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def assets(studio):
    """A tiny SD picture (text-to-image, 64x64), and what the mask is painted over: that picture, or a face."""
    url, _, _ = studio
    made = {"picture": job(url, SOURCE)["assets"][0]["id"]}
    made["painted"] = job(url, FACE)["assets"][0]["id"] if SHOTS else made["picture"]
    return made


def open_asset(driver, url: str, asset: str) -> None:
    open_view(driver, url, f"#/asset/{asset}", TOKEN)
    wait(driver, lambda d: shown(d, "#edit-actions"))


def open_tool(driver, name: str) -> None:
    press(driver, f"edit-{name}")
    wait(driver, lambda d: shown(d, f"#{name}-run, #{name}-x2"))
    assert driver.find_element(By.ID, f"edit-{name}").get_attribute("aria-expanded") == "true"


def result_of(driver, timeout: float = 240) -> str:
    """The asset the newest edit job made, once the panel links it."""
    link = wait(driver, lambda d: shown(d, "#edit-results li:first-child a[data-asset]"), timeout)
    return link.get_attribute("data-asset")


def press(driver, element_id: str) -> None:
    """Click a control in the middle of the window (the sticky header covers the top edge Selenium scrolls to)."""
    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def failed_line(driver) -> str:
    return driver.execute_script(
        "const li = document.querySelector('#edit-results li'); return li ? li.textContent : ''"
    )


def canvas_box(driver) -> dict:
    """The mask canvas scrolled into the middle of the window, where all of it must show, and its box."""
    canvas = driver.find_element(By.ID, "mask-canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", canvas)
    box = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, top: r.top, width: r.width, height: r.height, w: arguments[0].width,"
        " h: arguments[0].height, inner: [innerWidth, innerHeight]}",
        canvas,
    )
    assert box["top"] >= 0 and box["top"] + box["height"] <= box["inner"][1], box  # Selenium aims at the visible part
    return box


def mask_pixels(driver) -> np.ndarray:
    """The mask canvas as its page holds it: one grey level (the red channel) per image pixel."""
    flat = driver.execute_script(
        "const c = document.getElementById('mask-canvas');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 == 0))"
    )
    box = driver.execute_script("const c = document.getElementById('mask-canvas'); return [c.width, c.height]")
    return np.array(flat, dtype=np.uint8).reshape(box[1], box[0])


def stroke(driver, box: dict, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at `start`, move to `end` in a few steps and release: fractions of the canvas's shown size, real mouse
    events through the WebDriver (offsets from the canvas's centre)."""
    canvas = driver.find_element(By.ID, "mask-canvas")
    w, h = box["width"], box["height"]
    at = [(round((x - 0.5) * w), round((y - 0.5) * h)) for x, y in (start, end)]
    chain = ActionChains(driver).move_to_element_with_offset(canvas, *at[0]).click_and_hold()
    for step in range(1, 5):
        chain.move_to_element_with_offset(
            canvas,
            round(at[0][0] + (at[1][0] - at[0][0]) * step / 4),
            round(at[0][1] + (at[1][1] - at[0][1]) * step / 4),
        )
    chain.release().perform()


def distance_to_segment(shape: tuple[int, int], a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Each pixel centre's distance (in image pixels) from the segment a-b."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    (ax, ay), (bx, by) = a, b
    length = (bx - ax) ** 2 + (by - ay) ** 2
    t = np.clip(((xs - ax) * (bx - ax) + (ys - ay) * (by - ay)) / length, 0, 1)
    return np.hypot(xs - (ax + t * (bx - ax)), ys - (ay + t * (by - ay)))


def test_a_painted_mask_repaints_the_stroke_and_keeps_every_unpainted_pixel(studio, assets):
    url, driver, _ = studio
    source = assets["painted"]
    open_asset(driver, url, source)
    open_tool(driver, "inpaint")
    assert driver.find_element(By.ID, "inpaint-prompt").get_attribute("value") == (PROMPT if not SHOTS else "a face")
    assert driver.execute_script("return document.querySelectorAll('#view b').length") == 0
    box = canvas_box(driver)
    before = pixels(url, source)
    assert (box["w"], box["h"]) == (before.shape[1], before.shape[0])  # the canvas holds the image's own pixels
    assert box["width"] > 2 * box["w"]  # shown larger than it is: pointer positions are scaled to image pixels
    size = int(driver.find_element(By.ID, "mask-size").get_attribute("value"))
    start, end = (0.25, 0.5), (0.75, 0.4)
    stroke(driver, box, start, end)
    a, b = ((x * box["w"], y * box["h"]) for x, y in (start, end))
    distance = distance_to_segment(before.shape[:2], a, b)
    painted = mask_pixels(driver)
    assert (painted[distance < size / 2 - 1.5] == 255).all() and (painted[distance > size / 2 + 1.5] == 0).all()
    blur = driver.find_element(By.ID, "inpaint-mask-blur")
    blur.send_keys("0")
    screenshot(driver, "edit-mask", scroll_to="#edit-panel")
    press(driver, "inpaint-run")
    result = result_of(driver)
    after = pixels(url, result)
    assert after.shape == before.shape
    far = distance > size / 2 + 1.5  # outside the brush's radius (and its anti-aliased edge); mask_blur is 0
    assert np.array_equal(after[far], before[far])
    under = distance < size / 2 - 1.5
    changed = np.abs(after[under] - before[under]).max(axis=1) > 0
    assert changed.mean() > 0.5, changed.mean()
    made = httpx.get(
        f"{url}/v1/jobs/{driver.find_element(By.CSS_SELECTOR, '#edit-results li').get_attribute('data-job')}",
        headers=AUTH,
    ).json()
    params = made["request"]["params"]
    assert params["init_image"] == {"asset": source} and params["mask_blur"] == 0
    header, _, data = params["mask"].partition(",")
    mask = Image.open(io.BytesIO(base64.b64decode(data)))
    assert header == "data:image/png;base64" and mask.mode == "L" and mask.size == (box["w"], box["h"])
    assert np.array_equal(np.asarray(mask), painted)  # what was painted is what was sent, grey levels and all
    expected_model = "tiny-sd"
    assert made["request"]["backend"] == "diffusion" and made["request"]["model"] == expected_model
    open_asset(driver, url, result)  # an edit is no text-to-image: no hires fix offered for it
    assert not driver.find_elements(By.ID, "edit-hires") and shown(driver, "#edit-inpaint")


def test_invert_clear_and_the_eraser_change_the_canvas_at_a_phone_width(studio, assets):
    url, driver, _ = studio
    driver.set_window_size(*PHONE)
    try:
        open_asset(driver, url, assets["picture"])
        open_tool(driver, "inpaint")
        box = canvas_box(driver)
        assert box["width"] < PHONE[0]  # it fits the narrow window
        before = httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"]
        press(driver, "inpaint-run")  # nothing painted: said in the form, nothing sent
        wait(driver, lambda d: "paint over what to repaint" in d.find_element(By.ID, "inpaint-error").text, 30)
        assert httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"] == before
        box = canvas_box(driver)  # clicking Run scrolled the page
        stroke(driver, box, (0.2, 0.3), (0.8, 0.3))
        mask = mask_pixels(driver)
        row = round(0.3 * box["h"] - 0.5)
        assert mask[row, box["w"] // 2] == 255 and mask[box["h"] - 2, box["w"] // 2] == 0
        press(driver, "mask-invert")
        inverted = mask_pixels(driver)
        assert np.array_equal(inverted, 255 - mask)
        press(driver, "mask-invert")
        press(driver, "mask-eraser")
        assert driver.find_element(By.ID, "mask-eraser").get_attribute("aria-pressed") == "true"
        box = canvas_box(driver)
        stroke(driver, box, (0.5, 0.1), (0.5, 0.5))  # across the line: a gap in it
        erased = mask_pixels(driver)
        assert erased[row, box["w"] // 2] == 0 and erased[row, box["w"] // 5 + 2] == 255
        press(driver, "mask-clear")
        assert not mask_pixels(driver).any()
        sideways = "return document.documentElement.scrollWidth > innerWidth"
        assert not driver.execute_script(sideways)  # nothing sticks out of the narrow window
        press(driver, "edit-control")
        wait(driver, lambda d: shown(d, "#control-run"))
        assert not driver.execute_script(sideways)
    finally:
        driver.set_window_size(1366, 900)


def test_the_control_map_is_previewed_before_a_controlnet_job_from_the_asset_or_an_upload(studio, assets, tmp_path):
    url, driver, _ = studio
    source = assets["painted"]  # (a face in the screenshots, where a Canny map shows something)
    height, width, _ = pixels(url, source).shape
    open_asset(driver, url, source)
    open_tool(driver, "control")
    assert Select(driver.find_element(By.ID, "control-preprocess")).first_selected_option.text == "canny"

    def preview(d):
        return d.execute_script(
            "const img = document.getElementById('control-preview');"
            "if (!img.complete || !img.naturalWidth || img.hidden) return null;"
            "const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
            "const g = c.getContext('2d'); g.drawImage(img, 0, 0);"
            "const data = g.getImageData(0, 0, c.width, c.height).data;"
            "return {src: img.src, size: [c.width, c.height], levels: [...new Set(data.filter((_, i) => i % 4 == 0))]}"
        )

    first = wait(driver, preview, 60)
    assert first["size"] == [width, height] and set(first["levels"]) <= {0, 255}  # Canny: white edges on black
    screenshot(driver, "edit-control", scroll_to="#edit-panel")
    driver.find_element(By.ID, "control-option-low").send_keys("400")  # out of the option's range: said, not sent
    wait(driver, lambda d: "at most 255" in d.find_element(By.ID, "control-preview-status").text, 30)
    driver.find_element(By.ID, "control-option-low").clear()
    upload = tmp_path / "drawing.png"
    Image.new("RGB", (80, 72), "white").save(upload)
    driver.find_element(By.ID, "control-file").send_keys(str(upload))
    assert wait(driver, lambda d: (p := preview(d)) and p["size"] == [80, 72] and p)["levels"] == [0]  # no edges
    assert driver.find_element(By.ID, "control-source-upload").is_selected()
    press(driver, "control-source-asset")
    wait(driver, lambda d: (p := preview(d)) and p["size"] == [width, height])
    Select(driver.find_element(By.ID, "control-model")).select_by_value("tiny-controlnet")
    press(driver, "control-run")
    result = result_of(driver)
    assert pixels(url, result).shape == (height, width, 3)  # the control image sets the size
    made = httpx.get(
        f"{url}/v1/jobs/{driver.find_element(By.CSS_SELECTOR, '#edit-results li').get_attribute('data-job')}",
        headers=AUTH,
    ).json()
    (entry,) = made["request"]["params"]["control"]
    assert entry["model"] == "tiny-controlnet" and entry["image"] == {"asset": source}
    assert entry["preprocess"] == "canny"
    assert made["request"]["params"].get("steps") == (None if SHOTS else 2)  # the asset's own, where it is SD's


def test_outpainting_checks_its_sides_in_the_form_shows_the_servers_message_and_grows_the_image(studio, assets):
    url, driver, _ = studio
    open_asset(driver, url, assets["picture"])
    driver.execute_script("document.getElementById('edit-outpaint').focus()")
    ActionChains(driver).send_keys(Keys.ENTER).perform()  # from the keyboard: the form opens with the focus in it
    wait(driver, lambda d: shown(d, "#outpaint-run"))
    assert driver.execute_script("return document.getElementById('edit-panel').contains(document.activeElement)")
    before = httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"]
    left = driver.find_element(By.ID, "outpaint-left")
    left.send_keys("12")
    press(driver, "outpaint-run")
    wait(driver, lambda d: "a multiple of 8" in d.find_element(By.ID, "outpaint-error").text, 30)
    assert left.get_attribute("aria-invalid") == "true"
    left.clear()
    left.send_keys("8")
    driver.find_element(By.ID, "outpaint-right").send_keys("16")
    driver.find_element(By.ID, "outpaint-prompt").clear()  # only the server knows a prompt is needed: its line shows
    press(driver, "outpaint-run")
    error = wait(driver, lambda d: d.find_element(By.ID, "outpaint-error").text, 60)
    assert "prompt" in error and "\n" not in error
    assert httpx.get(f"{url}/v1/jobs", headers=AUTH).json()["total"] == before
    driver.find_element(By.ID, "outpaint-prompt").send_keys("a wider view")
    driver.find_element(By.ID, "outpaint-mask-blur").send_keys("0")  # (a blur would blend the original's edges)
    press(driver, "outpaint-run")
    result = result_of(driver)
    grown, source = pixels(url, result), pixels(url, assets["picture"])
    assert grown.shape == (64, 64 + 8 + 16, 3), failed_line(driver)
    assert np.array_equal(grown[:, 8 : 8 + 64], source)  # the original area is kept


def test_upscaling_is_hidden_with_a_note_without_an_upscaler_and_doubles_with_one(studio, assets):
    url, driver, models = studio
    catalog = httpx.get(f"{url}/v1/backends", headers=AUTH).json()
    image = catalog["kinds"]["image"]["backends"]
    assert image["upscale"]["models"] == ["tiny-x4.pth"] and image["diffusion"]["models"] == ["tiny-sd"]
    assert catalog["models"]["controlnets"] == ["tiny-controlnet"]  # a ControlNet steers a model; it runs as none
    assert not any(
        "tiny-controlnet" in (b["models"] or []) for k in catalog["kinds"].values() for b in k["backends"].values()
    )
    aside = models.parent / "tiny-x4.pth"
    (models / "tiny-x4.pth").rename(aside)
    try:
        open_asset(driver, url, assets["picture"])
        assert not driver.find_elements(By.ID, "edit-upscale")
        assert "upscaler model" in shown(driver, "#upscale-none").text
    finally:
        aside.rename(models / "tiny-x4.pth")
    open_asset(driver, url, assets["picture"])
    assert not driver.find_elements(By.ID, "upscale-none")
    open_tool(driver, "upscale")
    assert Select(driver.find_element(By.ID, "upscale-model")).first_selected_option.text == "tiny-x4.pth"
    press(driver, "upscale-x2")
    result = result_of(driver)
    assert pixels(url, result).shape == (128, 128, 3), failed_line(driver)
    made = httpx.get(f"{url}/v1/assets/{result}/meta", headers=AUTH).json()["record"]
    assert made["backend"] == "upscale" and made["params"]["scale"] == 2


def test_the_hires_fix_reruns_the_asset_at_its_own_seed_larger(studio, assets):
    url, driver, _ = studio
    open_asset(driver, url, assets["picture"])
    open_tool(driver, "hires")
    Select(driver.find_element(By.ID, "hires-factor")).select_by_value("2")
    press(driver, "hires-run")
    result = result_of(driver)
    assert pixels(url, result).shape == (128, 128, 3), failed_line(driver)
    record = httpx.get(f"{url}/v1/assets/{result}/meta", headers=AUTH).json()["record"]
    source = httpx.get(f"{url}/v1/assets/{assets['picture']}/meta", headers=AUTH).json()["record"]
    assert record["seed"] == source["seed"] and record["prompt"] == PROMPT
    assert record["params"]["hires"] == 2 and record["params"]["steps"] == 2
    assert math.isclose(record["params"]["hires_strength"], 0.5)


def test_pages_left_in_a_row_leave_no_stream_that_stalls_the_next(studio, assets):
    """Chrome keeps an abandoned page's event stream open until the server next writes to it; six in a minute held
    every connection it allows a server, and the next page waited ~59 s. A page now ends its streams when left."""
    url, driver, _ = studio
    for _ in range(8):
        started = time.monotonic()
        open_asset(driver, url, assets["picture"])
        assert time.monotonic() - started < 15

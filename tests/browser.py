"""Driving the studio in Debian's headless Chromium with Selenium, for the browser tests: the driver, waiting for the
page, opening a view with the token, following a job in the queue panel, and the docs' screenshots
(AIGC_SCREENSHOTS=DIR, `make screenshots`). The test modules skip themselves when chromium or chromedriver is
missing (CHROMIUM, CHROMEDRIVER), before importing this."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "chromium" if CHROMIUM is None else "chromedriver" if CHROMEDRIVER is None else None
LAPTOP, PHONE = (1366, 900), (390, 844)
SHOTS = Path(os.environ["AIGC_SCREENSHOTS"]) if os.environ.get("AIGC_SCREENSHOTS") else None
LOADS = itertools.count()


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Headless Chromium at a laptop's width, its console kept (to see failed loads)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_window_size(*LAPTOP)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 240):
    """Until condition(driver) is truthy; an element re-rendered under our feet is simply looked up again."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: condition(d))


def shown(driver, css: str):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found and found[0].is_displayed() else None


def open_view(driver, url: str, hash_: str, token: str) -> None:
    """Load the page afresh on a view, giving the token if the page asks for it (it keeps it in sessionStorage)."""
    driver.get(f"{url}/?load={next(LOADS)}{hash_}")
    wait(driver, lambda d: shown(d, "#token-dialog") or d.find_elements(By.CSS_SELECTOR, "main#view > *"))
    if shown(driver, "#token-dialog"):
        driver.find_element(By.ID, "token-input").send_keys(token, Keys.ENTER)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "main#view > *") and not shown(d, "#token-dialog"))


def state_of(driver, job_id: str) -> str | None:
    return driver.execute_script(
        "const li = document.querySelector(`#queue-list li[data-job='${arguments[0]}']`);"
        "return li ? li.dataset.state : null",
        job_id,
    )


def until_done(driver, job_id: str, timeout: float = 300) -> None:
    wait(driver, lambda d: state_of(d, job_id) in ("done", "failed", "cancelled"), timeout)
    assert state_of(driver, job_id) == "done", driver.find_element(By.ID, "queue-list").text


def screenshot(driver, name: str, scroll_to: str | None = None, dark: bool = False) -> None:
    """The docs' screenshots (only with AIGC_SCREENSHOTS): this view at a laptop width, then a phone width
    (and, with dark=True, the laptop one in the dark scheme too)."""
    if SHOTS is None:
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    if dark:
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
        )
        time.sleep(0.3)
        driver.save_screenshot(str(SHOTS / f"{name}-dark-laptop.png"))
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
        driver.set_window_size(*size)
        time.sleep(0.3)  # let the layout settle at the new width (a picture only; nothing is asserted on it)
        if scroll_to:
            driver.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'})", scroll_to)
        driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
        driver.execute_script("window.scrollTo(0, 0)")
    driver.set_window_size(*LAPTOP)

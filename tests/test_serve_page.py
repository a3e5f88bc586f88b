"""The service's web page in a real browser (Debian's chromium, headless, through
chromedriver): both streams listed with growing frame counts, their live previews loaded
and moving, a stream added with the form and removed with its button."""

from __future__ import annotations

import json
import os
import time

import pytest

from scripts.serve_screenshot import headless_chromium
from tests.conftest import BIKES, COCKATOO
from tests.serve_helpers import LABELS, MOBILENET_V2_WEIGHTS, Service, wait_for

pytestmark = pytest.mark.e2e
# where to keep a picture of the page (scripts/serve_screenshot.py takes the README's)
SCREENSHOT_PATH = os.environ.get("TORCHSTREAM_SCREENSHOT")

PREVIEW_PIXELS = """
const img = document.querySelector(`[data-stream="${arguments[0]}"] .preview`);
if (!img || !img.complete || img.naturalWidth === 0) return null;
const canvas = document.createElement("canvas");
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
canvas.getContext("2d").drawImage(img, 0, 0);
return [img.naturalWidth, img.naturalHeight, canvas.toDataURL("image/png")];
"""


@pytest.fixture
def browser():
    chrome = headless_chromium()
    yield chrome
    chrome.quit()


def frames_shown(browser, name: str) -> int | None:
    text = browser.execute_script(
        f'const e = document.querySelector(`[data-stream="{name}"] .frames`);'
        "return e ? e.textContent : null;")
    return int(text) if text and text.isdigit() else None


def test_the_page_shows_the_streams_live_and_adds_and_removes_one(tmp_path, browser):
    from selenium.webdriver.common.by import By

    properties = (f'properties = {{ model = "torchvision.models.mobilenet_v2", '
                  f'model-weights = "{MOBILENET_V2_WEIGHTS}", labels-file = "{LABELS}" }}\n')
    streams = tmp_path / "streams.toml"
    streams.write_text(f'[defaults]\nelement = "video_inference"\n{properties}'
                       f'[[stream]]\nname = "street"\nsource = "{BIKES}"\nloop = true\n'
                       'sync = true\n'
                       f'[[stream]]\nname = "cockatoo"\nsource = "{COCKATOO}"\nloop = true\n'
                       'sync = true\n')
    service = Service(tmp_path, str(streams))
    try:
        browser.get(service.url + "/")
        for name in ("street", "cockatoo"):
            first = wait_for(lambda n=name: frames_shown(browser, n), 120, f"{name} shown")
            wait_for(lambda n=name, f=first: (frames_shown(browser, n) or 0) > f + 5, 30,
                     f"{name}'s frame count growing on the page")
            state = browser.find_element(By.CSS_SELECTOR, f'[data-stream="{name}"] .state')
            assert state.text == "running"
            width, height, pixels = wait_for(
                lambda n=name: browser.execute_script(PREVIEW_PIXELS, n), 30,
                f"{name}'s preview loaded")
            assert (width, height) == ((640, 272) if name == "street" else (1280, 720))
            time.sleep(1.0)
            assert browser.execute_script(PREVIEW_PIXELS, name)[2] != pixels, \
                f"{name}'s preview did not change in a second"
        if SCREENSHOT_PATH:
            browser.save_screenshot(SCREENSHOT_PATH)

        form = browser.find_element(By.ID, "add-form")
        form.find_element(By.NAME, "name").send_keys("third")
        form.find_element(By.NAME, "source").send_keys(str(BIKES))
        form.find_element(By.NAME, "element").send_keys("video_inference")
        form.find_element(By.NAME, "properties").send_keys(json.dumps(
            {"model": "torchvision.models.mobilenet_v2",
             "model-weights": str(MOBILENET_V2_WEIGHTS)}))
        form.find_element(By.NAME, "loop").click()
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: "third added" in browser.find_element(By.ID, "message").text, 30,
                 "the page to say the stream was added: "
                 + browser.find_element(By.ID, "message").text)
        assert "third" in service.streams()
        wait_for(lambda: (frames_shown(browser, "third") or 0) > 5, 120,
                 "the added stream's frames on the page")

        browser.find_element(By.CSS_SELECTOR, '[data-remove="third"]').click()
        wait_for(lambda: "third removed" in browser.find_element(By.ID, "message").text, 60,
                 "the page to say the stream was removed")
        wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, '[data-stream="third"]'),
                 10, "the removed stream's card gone")
        assert set(service.streams()) == {"street", "cockatoo"}
    finally:
        assert service.stop() == 0, service.log[-3000:]


"""A picture of a running service's web page, taken in headless Chromium (the README's:
``make serve`` in one shell, then ``python -m scripts.serve_screenshot`` in another).

    python -m scripts.serve_screenshot [URL] [PNG]   # default http://127.0.0.1:8080/,
                                                     # docs/images/serve_page.png
"""

from __future__ import annotations

import shutil
import sys
import time


def headless_chromium(width: int = 1400, height: int = 1000):
    """Debian's chromium through its chromedriver (both installed by ``make setup``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("chromium and chromedriver are missing: make setup installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--disable-gpu"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8080/"
    out = argv[2] if len(argv) > 2 else "docs/images/serve_page.png"
    browser = headless_chromium(1400, 820)
    try:
        browser.get(url)
        time.sleep(6)  # the streams' figures and previews come in
        browser.save_screenshot(out)
    finally:
        browser.quit()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

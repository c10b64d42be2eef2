"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) opens the page offline, it renders without a
JavaScript error, the 3-D view and the contour map draw (enough coloured pixels in their
boxes), dragging turns the surface, and the page makes no network request.

Skipped where chromium, chromedriver or selenium is absent. ``LANDSCAPE_REPORT_SCREENSHOT=PATH``
saves the demo report's screenshot there (docs/report.png is made so)."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest

from landscape.plot.report import write_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--enable-unsafe-swiftshader",
        "--window-size=1280,1400",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # the browser's own update and safe-browsing checks
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _drawn_fraction(png: bytes) -> float:
    """Share of an element's pixels that differ from the white background."""
    rgb = _pixels(png)
    return float((np.abs(rgb - 255).max(axis=2) > 40).mean())


def _open(driver, page: str) -> dict:
    """Load ``page`` and wait until the script has drawn every block; the browser's console
    messages and network requests of the load, and the page's resource list."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what an earlier page logged
    driver.get_log("performance")
    url = "file://" + os.path.abspath(page)
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.getAttribute('data-rendered')"))
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {
        "url": url,
        "rendered": driver.execute_script("return document.body.getAttribute('data-rendered')"),
        "console": driver.get_log("browser"),
        "requests": requests,
        "resources": driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"),
    }


def _check_page(driver, page: str, *, sections: int, screenshot: str | None = None) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    state = _open(driver, page)
    assert state["rendered"] == "ok"
    errors = [e for e in state["console"] if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    # the page itself is the only thing loaded: no network request, no resource
    assert [u for u in state["requests"] if u != state["url"]] == []
    assert state["resources"] == []
    assert len(driver.find_elements(By.CSS_SELECTOR, "section.section")) == sections
    # the first plane: the 3-D view and the contour map drew in colour
    view = driver.find_elements(By.CSS_SELECTOR, "canvas.surface3d")[0]
    contour = driver.find_elements(By.CSS_SELECTOR, "canvas.contour")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", view)
    before = view.screenshot_as_png
    assert _drawn_fraction(before) > 0.08
    assert len(np.unique(_pixels(before).reshape(-1, 3), axis=0)) > 50  # a colour map, not a flat fill
    assert _drawn_fraction(contour.screenshot_as_png) > 0.3
    if screenshot:  # the first plane's section at the top of a 1280 x 900 window, as loaded
        driver.set_window_size(1280, 900)
        driver.execute_script("arguments[0].closest('section').scrollIntoView()", view)
        driver.save_screenshot(screenshot)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", view)
    # dragging turns the surface; switching to log height redraws; still no error
    ActionChains(driver).move_to_element(view).click_and_hold().move_by_offset(60, 15).release().perform()
    assert np.abs(_pixels(view.screenshot_as_png) - _pixels(before)).max() > 0
    box = driver.find_elements(By.XPATH, "//label[contains(., 'log height')]/input")[0]
    if box.is_enabled():
        box.click()
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_small_report_renders_offline(browser, tmp_path):
    from test_report import make_connections, make_line, make_plane, make_profile

    paths = [
        make_plane(tmp_path / "plane.h5"),
        make_plane(tmp_path / "hessian.h5", hessian=True, surface_type="random"),
        make_line(tmp_path / "line.h5"),
        make_profile(tmp_path / "profile.h5"),
        make_connections(tmp_path / "connections.h5"),
    ]
    page = tmp_path / "report.html"
    write_report(paths, page)
    _check_page(browser, str(page), sections=len(paths))


@pytest.mark.slow
def test_demo_report_renders_offline(browser, tmp_path):
    """The demo's own report (the demo runs here: about 2 minutes)."""
    from landscape.demo import run_demo

    out = run_demo(str(tmp_path / "demo"), progress=False)
    page = out["report"]
    assert os.path.getsize(page) < 20e6
    _check_page(browser, page, sections=len(out["files"]), screenshot=os.environ.get("LANDSCAPE_REPORT_SCREENSHOT"))

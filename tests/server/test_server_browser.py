"""The demo in a real browser: headless Chromium (Playwright) against ``python -m server`` on 127.0.0.1.

Needs the system Chromium at /usr/bin/chromium (Debian: ``apt-get install chromium``; never ``playwright install``).
Without it the tests are skipped on a laptop and fail in CI (``CI=true``), so CI cannot pass without them.
Screenshots go to $TEST_ARTIFACTS or <repo>/test-artifacts/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, publish

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")


def require_browser():
    """Playwright's sync API, or a skip (laptop) / failure (CI) saying what is missing."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -r requirements.txt)"
    if problem is None and not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(problem)
    return sync_playwright


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, trained_versions):
    """``python -m server`` on a free loopback port, serving version 1; stopped after the module."""
    models_dir = tmp_path_factory.mktemp("browser") / "models" / "mnist"
    models_dir.mkdir(parents=True)
    publish(trained_versions, models_dir, 1)
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--model-dir", str(models_dir)],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not become ready:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800}, device_scale_factor=1)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def wait_for_bars(page) -> None:
    """The bar chart has animated to the answer: the top digit's bar is as long as its probability says."""
    page.wait_for_function(
        """() => {
            const top = document.querySelector('#bars li.top');
            if (!top) return false;
            const share = top.querySelector('.fill').offsetWidth / top.querySelector('.track').offsetWidth;
            return share > 0.5 && Math.abs(share - parseFloat(top.querySelector('.pct').textContent) / 100) < 0.02;
        }""",
        timeout=5_000,
    )


def screenshot(page, name: str) -> None:
    wait_for_bars(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_upload_a_photo_of_a_digit(page, server_url, tmp_path, png, mnist_test_set):
    # Prepare: a large black-on-white picture of a test digit, like a scan
    images, labels = mnist_test_set
    picture = tmp_path / "digit.png"
    picture.write_bytes(png(images[0], size=600, invert=True))

    # Execute
    page.goto(server_url)
    page.click("#tab-upload")
    page.set_input_files("#file", str(picture))

    # Assert
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#digit") == str(labels[0])
    assert page.text_content("#confidence").endswith("%")
    assert page.locator("#bars li.top").count() == 1
    screenshot(page, "upload")


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw strokes on the pad with the mouse; points are fractions (0-1) of the pad's width and height."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.45, 0.82)]]
ONE = [[(0.50, 0.18), (0.50, 0.84)]]
FOUR = [[(0.32, 0.18), (0.26, 0.55), (0.72, 0.55)], [(0.62, 0.30), (0.62, 0.86)]]


@pytest.mark.parametrize("digit, strokes", [(7, SEVEN), (1, ONE), (4, FOUR)])
def test_draw_a_digit_on_the_canvas(page, server_url, digit, strokes):
    page.goto(server_url)

    draw(page, strokes)

    page.wait_for_function(f"document.getElementById('digit').textContent === '{digit}'", timeout=10_000)
    # The 28x28 preview shows what the model saw: white ink on black.
    seen = page.evaluate(
        "() => Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)"
    )
    assert max(seen[0::4]) == 255 and seen[0] == 0
    screenshot(page, f"draw-{digit}")

    page.click("#clear")
    assert page.is_visible("#placeholder")


def test_the_model_page_and_the_demo_fit_a_phone(browser, server_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True)
    page = context.new_page()
    try:
        page.goto(server_url)
        draw(page, SEVEN)
        page.wait_for_selector("#result:not([hidden])")
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "phone-demo")

        page.goto(f"{server_url}/model")
        assert page.text_content("h1") == "Model version 1"
        assert page.locator("svg.chart circle").count() >= 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "phone-model.png"), full_page=True)
    finally:
        context.close()


def test_the_model_page_on_a_desktop(page, server_url):
    page.goto(f"{server_url}/model")

    assert page.text_content("h1") == "Model version 1"
    assert page.locator("table.matrix td.hit").count() == 10
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)


def test_an_unreadable_upload_shows_a_clear_error(page, server_url, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    page.goto(server_url)
    page.click("#tab-upload")
    page.set_input_files("#file", str(bad))

    page.wait_for_selector("#error:not([hidden])")
    assert "not a PNG or JPEG" in page.text_content("#error")

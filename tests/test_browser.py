"""The drawing page in a real browser: Debian's headless Chromium driven by Playwright, against a real ``serve``.

Playwright's own browser download needs the internet, so the test launches an installed Chromium
(``$MNIST_LIT_CHROMIUM``, else ``chromium`` on the PATH). Without one it FAILS, saying how to install it: the page
is part of what ``make test`` checks, and CI installs Chromium first (``.ci/run``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from mnist_lit.data.preprocess import load_mnist
from mnist_lit.inference.predictor import Predictor
from tests.digits import photograph
from tests.digits import test_digits as mnist_test_digits  # not collected as a test
from tests.serving import ServeProcess, assert_stops_cleanly

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser

# Headless in a container: no sandbox (needs privileges), no GPU, nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]


def chromium_path() -> str:
    path = os.environ.get("MNIST_LIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).is_file():
        pytest.fail("no Chromium to run the drawing page in: install it (Debian/Ubuntu: `sudo apt-get install "
                    "chromium`) or set MNIST_LIT_CHROMIUM to a Chromium executable", pytrace=False)
    return path


@pytest.fixture(scope="module")
def server(rejecting_ckpt, tmp_path_factory):
    """A checkpoint with a "not a digit" rule, as the recipes that train with outliers write."""
    serve = ServeProcess(rejecting_ckpt, cwd=tmp_path_factory.mktemp("browser") / "cwd", new_session=True)
    serve.wait_ready()
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """The page, with every request it makes recorded in ``page.requested`` and console errors in ``page.errors``.

    The page forbids ``eval`` (its Content-Security-Policy), so waits are ``expect`` assertions or
    ``wait_for_function`` on an arrow function: a plain expression is re-``eval``-ed on every poll and throws."""
    context = browser.new_context(viewport={"width": 900, "height": 600})
    page = context.new_page()
    page.requested, page.errors = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{server.url}/ui/")
    yield page
    context.close()


def draw(page: Page, strokes: list[list[tuple[float, float]]], lift: bool = True) -> None:
    """Mouse strokes on the pad; points are fractions of its width and height, each stroke pressed, moved, released
    (the last one left pressed unless ``lift``)."""
    box = page.locator("#pad").bounding_box()
    for i, stroke in enumerate(strokes):
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for t in np.linspace(0, 1, 12)[1:]:  # many small moves, as a hand makes, with pauses for the throttle
                page.mouse.move(box["x"] + (x0 + t * (x1 - x0)) * box["width"],
                                box["y"] + (y0 + t * (y1 - y0)) * box["height"])
                page.wait_for_timeout(15)
        if lift or i < len(strokes) - 1:
            page.mouse.up()


SEVEN = [[(0.25, 0.22), (0.75, 0.22), (0.45, 0.82)]]  # a bar, then the long diagonal down to the left
ONE = [[(0.5, 0.15), (0.5, 0.85)]]
X = [[(0.15, 0.15), (0.85, 0.85)], [(0.85, 0.15), (0.15, 0.85)]]
NOT_A_DIGIT = "That doesn't look like a digit"


@pytest.mark.parametrize(("digit", "strokes"), [(7, SEVEN), (1, ONE)])
def test_a_drawn_digit_is_read_live_and_only_this_server_is_asked(page, server, digit, strokes):
    draw(page, strokes)
    expect(page.locator("#digit")).to_have_text(str(digit), timeout=10_000)
    expect(page.locator("#bars li")).to_have_count(3)
    expect(page.locator("#bars li .label").first).to_have_text(str(digit))
    expect(page.locator(".result")).not_to_have_class(re.compile("not-digit"))
    page.wait_for_function(  # the top bar is drawn as wide as its probability says (after its transition)
        "() => { const li = document.querySelector('#bars li'); const p = parseFloat(li.querySelector('.value')"
        ".textContent) / 100; const w = li.querySelector('.fill').getBoundingClientRect().width / "
        "li.querySelector('.track').getBoundingClientRect().width; return Math.abs(w - p) < 0.02; }")
    expect(page.locator("#seen")).to_have_js_property("naturalWidth", 28)  # the 28×28 the network saw
    assert page.locator("#seen").evaluate("img => img.naturalHeight") == 28
    predictions = [url for url in page.requested if url.endswith("/predict")]
    assert len(predictions) >= 2, page.requested  # live while drawing, and again on release
    assert page.requested and all(url.startswith(f"{server.url}/") for url in page.requested), page.requested
    assert not page.errors, page.errors


def test_a_drawn_x_is_not_a_digit_and_its_top_3_is_greyed(page, server):
    """The checkpoint's rule, on the page: the message in place of a digit, the top 3 still shown, greyed; a digit
    drawn after Clear is read again, in colour."""
    draw(page, X)
    expect(page.locator("#digit")).to_have_text(NOT_A_DIGIT, timeout=10_000)
    expect(page.locator("#probability")).to_have_text("")
    expect(page.locator("#bars li")).to_have_count(3)
    fill = "() => getComputedStyle(document.querySelector('#bars .fill')).backgroundColor"
    assert page.evaluate(fill) == "rgb(184, 188, 198)"  # greyed
    expect(page.locator("#seen")).to_have_js_property("naturalWidth", 28)
    page.click("#clear")
    draw(page, ONE)
    expect(page.locator("#digit")).to_have_text("1", timeout=10_000)
    assert page.evaluate(fill) == "rgb(91, 79, 224)"  # the accent colour again
    assert not page.errors, page.errors


def test_not_a_digit_is_said_once_the_pen_is_lifted(page):
    """Live answers while the pen is down grey the top 3 but keep the message back (a digit half drawn is often no
    digit yet, and the message would flicker); lifting the pen says it."""
    draw(page, X, lift=False)
    expect(page.locator("#digit")).to_have_text("…", timeout=10_000)
    expect(page.locator(".result")).to_have_class(re.compile("not-digit"))
    page.mouse.up()
    expect(page.locator("#digit")).to_have_text(NOT_A_DIGIT, timeout=10_000)
    assert not page.errors, page.errors


def test_a_tap_leaves_a_dot_and_is_read(page):
    """A tap is a stroke of no length, which a canvas does not draw: the page draws a dot of the pen's width."""
    box = page.locator("#pad").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    inked = page.locator("#pad").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(c.width / 2 - 3, c.height / 2 - 3, 6, 6).data)"
        ".every((v, i) => i % 4 === 3 || v < 60)")
    assert inked, "black under the tap"
    expect(page.locator("#seen")).to_have_js_property("naturalWidth", 28)  # read: not "no ink found"
    assert not page.errors, page.errors


def test_clear_empties_the_pad_and_the_answer(page):
    draw(page, ONE)
    expect(page.locator("#digit")).to_have_text("1", timeout=10_000)
    page.click("#clear")
    expect(page.locator("#digit")).to_have_text("–")
    expect(page.locator("#bars li")).to_have_count(0)
    blank = page.locator("#pad").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 255)")
    assert blank


def test_a_chosen_image_file_is_read_as_predict_images_reads_it(page, server, ckpt, mnist_dir, tmp_path):
    digits, labels = mnist_test_digits(Path(mnist_dir), 1)
    photo = tmp_path / "photo.png"
    photograph(digits[0], np.random.default_rng(1)).convert("RGB").save(photo)
    expected = int(Predictor.from_checkpoint(ckpt).probabilities(load_mnist(photo)[None]).argmax())
    assert expected == labels[0]
    page.set_input_files("#file", str(photo))
    expect(page.locator("#digit")).to_have_text(str(expected), timeout=10_000)
    seen = page.locator("#seen").evaluate("img => img.src")
    assert seen.startswith("data:image/png;base64,")
    assert all(url.startswith(f"{server.url}/") or url.startswith("data:") for url in page.requested), page.requested
    assert not page.errors, page.errors


def test_a_file_that_is_not_an_image_shows_the_servers_one_line_error(page, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("these are notes, not pixels")
    page.set_input_files("#file", str(notes))
    expect(page.locator("#status")).to_have_text("image: not an image (unrecognised file format)", timeout=10_000)
    expect(page.locator("#digit")).to_have_text("?")


def test_ctrl_c_stops_every_process_and_frees_the_port(server):
    """Last in this file: Ctrl+C in a terminal sends SIGINT to the server's whole process group."""
    assert_stops_cleanly(server, signal.SIGINT, group=True)

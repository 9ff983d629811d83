"""The web page in a real browser: Playwright drives Debian's Chromium against a real
``infership serve`` process. Screenshots go to test-artifacts/ for people to look at."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import TESTDATA, RunningServer, start_server, stop_server
from infership.app import EXAMPLE_REPOSITORY

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
CHELSEA = TESTDATA / "images" / "chelsea.jpg"
# How Chromium must run here: no sandbox as root, and no background calls to Google's hosts,
# which the closed network refuses. Playwright gives it a fresh profile of its own.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.exists():
    reason = "needs Debian's Chromium at /usr/bin/chromium: run .ci/setup.d/30-chromium.sh"
    if os.environ.get("INFERSHIP_CI"):  # set by .ci/run, which installs it: never skip there
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright  # noqa: E402


def write_tensor_model(folder: Path) -> None:
    """A model that takes plain tensors: y = 2·x + 1 over FP32 [n, 3]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(np.float32([2.0]), "two"),
            numpy_helper.from_array(np.float32([1.0]), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(model.SerializeToString())
    (folder / "model.yaml").write_text("runtime: onnx\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("web") / "models"
    shutil.copytree(EXAMPLE_REPOSITORY, repository)
    write_tensor_model(repository / "affine")
    running = start_server(str(repository))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page_errors() -> list[str]:
    return []


def open_page(browser: Browser, url: str, errors: list[str], **context: object) -> Page:
    """The page, loaded; console errors (a CSP violation is one) and uncaught exceptions are
    collected into ``errors``."""
    page = browser.new_context(**context).new_page()  # type: ignore[arg-type]

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(url + "/")
    assert response is not None
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body[data-ready=true]")
    return page


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def burst(url: str, requests: int = 40) -> None:
    image = CHELSEA.read_bytes()

    def one(_: int) -> int:
        files = {"img": ("chelsea.jpg", image, "image/jpeg")}
        return httpx.post(f"{url}/v2/models/efficientnet-lite0/predict", files=files).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(requests))) == {200}


def test_upload_shows_egyptian_cat_and_charts_follow_a_burst(
    browser: Browser, server: RunningServer, page_errors: list[str]
) -> None:
    page = open_page(browser, server.url, page_errors, viewport={"width": 1280, "height": 900})
    rows = page.locator("#model-rows tr")
    expect(rows.filter(has_text="efficientnet-lite0")).to_contain_text("READY")
    expect(rows.filter(has_text="affine")).to_contain_text("READY")

    page.select_option("#model-select", "efficientnet-lite0")
    page.set_input_files("#image-input", str(CHELSEA))
    predictions = page.locator("#predictions li")
    expect(predictions).to_have_count(5)
    expect(predictions.first).to_contain_text("Egyptian cat")
    expect(page.locator("#image-timing")).to_contain_text("server")

    burst(server.url)
    rps = page.locator("#chart-rps")
    expect(rps).not_to_have_attribute("data-last", "")
    page.wait_for_function(
        "Number(document.querySelector('#chart-rps').dataset.last) > 0", timeout=10_000
    )
    expect(page.locator("#chart-latency path.line").first).to_be_visible()
    expect(page.locator("#chart-batch path.line")).to_be_visible()
    expect(page.locator("#chart-rps .now")).not_to_have_text("–")
    screenshot(page, "web-desktop.png")
    assert page_errors == []


def test_tensor_form_runs_a_model_without_images(
    browser: Browser, server: RunningServer, page_errors: list[str]
) -> None:
    page = open_page(browser, server.url, page_errors)
    page.select_option("#model-select", "affine")
    expect(page.locator("#image-panel")).to_be_hidden()
    page.get_by_label("Shape").fill("2, 3")
    page.get_by_label("Values").fill("0 1 2 3 4 5")
    page.get_by_role("button", name="Run inference").click()
    result = page.locator("#tensor-result tbody tr")
    expect(result).to_contain_text("y")
    expect(result).to_contain_text("[2, 3]")
    expect(result).to_contain_text("1, 3, 5, 7, 9, 11")

    page.get_by_label("Values").fill("0 1 2")
    page.get_by_role("button", name="Run inference").click()
    expect(page.locator("#try-error")).to_contain_text("needs 6 values; got 3")
    screenshot(page, "web-tensor-form.png")
    assert page_errors == []


def test_snippet_tabs_work_from_the_keyboard(
    browser: Browser, server: RunningServer, page_errors: list[str]
) -> None:
    page = open_page(browser, server.url, page_errors)
    page.select_option("#model-select", "efficientnet-lite0")
    code = page.locator("#snippet-code")
    expect(code).to_contain_text(f"curl -F img=@cat.jpg '{server.url}/v2/models/")
    page.get_by_role("tab", name="curl").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Python requests")).to_be_focused()
    expect(code).to_contain_text("requests.post(")
    page.keyboard.press("End")
    expect(code).to_contain_text('client.infer("efficientnet-lite0", [image])')
    assert page_errors == []


def test_the_page_fits_a_phone_screen(
    browser: Browser, server: RunningServer, page_errors: list[str]
) -> None:
    page = open_page(
        browser,
        server.url,
        page_errors,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page.select_option("#model-select", "efficientnet-lite0")
    page.set_input_files("#image-input", str(CHELSEA))
    expect(page.locator("#predictions li").first).to_contain_text("Egyptian cat")
    screenshot(page, "web-phone.png")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, f"the page is {overflow} px wider than a phone screen"
    # One column: the try-it panel and the charts are as wide as the screen allows.
    for selector in ("#try", "#chart-rps", "#chart-queue"):
        box = page.locator(selector).bounding_box()
        assert box is not None
        assert box["width"] > 300, selector
    assert page_errors == []

"""The try-it page of `keras-resnet serve` and evaluate's report.html in a real headless Chromium
(Debian's `chromium`, driven by Playwright; `make test` installs it where it can).

Screenshots of both pages go to the test's tmp dir (``try_page.png``, ``report.png``).
"""

import io
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import CifarResNet, export_saved_model
from keras_resnet.serving import Client, ServingError

pytestmark = pytest.mark.slow

CLASS_NAMES = [f"digit {i}" for i in range(10)]
INSTALL = "apt-get install -y chromium (as root), then pip install playwright"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def digits_model():
    keras.utils.set_random_seed(3)
    body = CifarResNet(depth=8, input_shape=(8, 8, 1), classes=10)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0), body],
                            name="digits")


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(f"Chromium is not installed; install it with: {INSTALL}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is not installed; install it with: {INSTALL}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny digits model exported under saved_models/ and a `keras-resnet serve` process."""
    base = tmp_path_factory.mktemp("saved_models")
    model = digits_model()
    export_saved_model(model, base, name="digits", class_names=CLASS_NAMES, top_k=3,
                       warmup_batch_sizes=(1,))
    port = _free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "keras_resnet", "serve", str(base),
                                "--port", str(port), "--poll-seconds", "0.5"],
                               stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 180
    while True:
        try:
            client.status("digits")
            break
        except ServingError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("server did not start:\n" + (base / "server.log").read_text())
            time.sleep(0.25)
    yield model, f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(20)
    log.close()


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _watch_console(page):
    errors = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_try_page_classifies_a_png_and_explains_a_bad_file(browser, served, tmp_path):
    model, url = served
    pixels = np.random.default_rng(7).integers(0, 256, (8, 8)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    (tmp_path / "digit.png").write_bytes(buffer.getvalue())
    (tmp_path / "notes.txt").write_text("not an image")
    expected = CLASS_NAMES[int(np.argmax(model(pixels[None, :, :, None].astype("float32"))))]

    page = browser.new_page()
    errors = _watch_console(page)
    page.goto(url + "/")
    assert page.locator("#served").inner_text().split("\n")[1].split() == ["digits", "1"]
    page.set_input_files("#file", str(tmp_path / "digit.png"))
    page.wait_for_selector("#result .row")
    assert page.locator("#result .name").first.inner_text() == expected
    assert page.locator("#result .row").count() == 3
    assert page.locator("#error").inner_text() == ""
    page.screenshot(path=str(tmp_path / "try_page.png"), full_page=True)
    assert errors == []

    page.set_input_files("#file", str(tmp_path / "notes.txt"))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "notes.txt" in page.locator("#error").inner_text()
    assert "not an image" in page.locator("#error").inner_text()
    assert page.locator("#result .row").count() == 0
    page.screenshot(path=str(tmp_path / "try_page_bad_file.png"), full_page=True)
    assert errors == []
    page.close()


def test_report_renders_every_picture(browser, tmp_path):
    from keras_resnet import load_dataset
    from keras_resnet.evaluation import evaluate

    data = load_dataset("digits", batch_size=128, augment=False)
    result = evaluate(digits_model(), data, out_dir=tmp_path / "report", verbose=0)
    page = browser.new_page()
    errors = _watch_console(page)
    page.goto((tmp_path / "report" / "report.html").as_uri())
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
    assert len(widths) == 4 and all(width > 0 for width in widths)
    assert f"{result['top1_accuracy']:.4f}" in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert errors == []
    page.close()

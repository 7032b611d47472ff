"""The page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser)
against ``braintumor serve`` started on a free loopback port.

It uploads a generated slice, a noise image and a text file through the page and checks the
class, the four bars, the heatmap and its opacity slider, the "not a brain MRI" banner, the error
line of the text file, drag and drop, keyboard use, and a phone-width (360 px) layout without
horizontal scrolling, with no console errors. Screenshots go to ``$BRAINTUMOR_ARTIFACTS`` (default
``tests/serve/artifacts/``, ignored by git).

``BRAINTUMOR_SCREENSHOT_MODEL`` (e.g. ``default``) and ``BRAINTUMOR_SCREENSHOT_IMAGE`` (a real
slice) run the same test with another model and image, for the README's screenshot.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_images import encode, slice_rgb

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLASS_NAMES = {"glioma": "Glioma", "meningioma": "Meningioma", "no_tumor": "No tumour", "pituitary": "Pituitary tumour"}


def artifacts() -> Path:
    folder = Path(os.environ.get("BRAINTUMOR_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tiny_predictor, serve_cache, tmp_path_factory):
    """``braintumor serve`` in its own process (the tiny model's ONNX graph already cached);
    yields its URL and the path of its log."""
    model = os.environ.get("BRAINTUMOR_SCREENSHOT_MODEL") or str(tiny_checkpoint)
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    env = {**os.environ, "BRAINTUMOR_CACHE": str(serve_cache)}
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "braintumor", "serve", "-m", model, "--port", str(port),
                                    "--workers", "2"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"braintumor serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"braintumor serve did not answer: {log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (as root it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def slice_file() -> dict:
    """The slice to upload: `BRAINTUMOR_SCREENSHOT_IMAGE`, else a generated one of the tiny
    model's 'glioma' kind (a bright blob in the top-left quadrant)."""
    chosen = os.environ.get("BRAINTUMOR_SCREENSHOT_IMAGE")
    if chosen:
        return {"name": Path(chosen).name, "mimeType": "image/jpeg", "buffer": Path(chosen).read_bytes()}
    rgb = np.asarray(Image.fromarray(slice_rgb(label=0, size=128, seed=7)).resize((384, 384), Image.BICUBIC))
    return {"name": "slice.jpg", "mimeType": "image/jpeg", "buffer": encode(rgb, "JPEG", quality=92)}


def noise_file() -> dict:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return {"name": "noise.png", "mimeType": "image/png", "buffer": encode(noise, "PNG")}


def text_file() -> dict:
    return {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image, just notes\n"}


class Console:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def unexpected(self, allowed_statuses: tuple[int, ...] = ()) -> list[str]:
        """Errors other than Chromium's own line for an answer of an allowed status (it logs
        every 4xx answer to a fetch; the page shows those itself)."""
        allowed = [f"the server responded with a status of {status}" for status in allowed_statuses]
        return [e for e in self.errors if not (e.startswith("Failed to load resource") and any(a in e for a in allowed))]


def card(page, name: str):
    return page.locator(".card", has=page.locator(".file-name", has_text=name))


def test_page_classifies_explains_and_reports_errors(server, browser):
    url, log = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    console = Console(page)
    page.goto(url)
    notice = page.locator("#notice")
    assert notice.is_visible() and "Research use only — not a medical device" in notice.inner_text()
    page.wait_for_function("document.getElementById('model').textContent.includes('version')")

    upload, rejected, text = slice_file(), noise_file(), text_file()
    page.set_input_files("#files", [upload, rejected, text])
    good = card(page, upload["name"])
    good.locator(".heat").wait_for(state="visible", timeout=120_000)
    card(page, "notes.txt").locator(".error-line").wait_for(timeout=30_000)
    card(page, "noise.png").locator(".heat").wait_for(state="visible", timeout=60_000)

    # the slice: its class, one bar per class, the heatmap over the image
    assert page.locator(".card").count() == 3
    label = good.locator(".verdict-label").inner_text()
    bars = good.locator(".bar")
    assert bars.count() == 4
    assert sorted(bars.evaluate_all("items => items.map(b => b.dataset.class)")) == sorted(CLASS_NAMES)
    widths = {b.get_attribute("data-class"): float(b.locator(".bar-fill").evaluate("e => e.getBoundingClientRect().width"))
              for b in bars.all()}
    top = good.locator(".bar.top").get_attribute("data-class")
    assert label == CLASS_NAMES[top] and widths[top] == max(widths.values()) and widths[top] > 0
    if "BRAINTUMOR_SCREENSHOT_IMAGE" not in os.environ:
        assert label == "Glioma"  # the tiny model's class of a blob in the top-left quadrant
    assert not good.locator(".banner").is_visible()
    for selector in (".scan", ".heat"):
        assert good.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")
    # the opacity slider drives the heatmap's opacity
    good.locator(".opacity").fill("20")
    assert good.locator(".heat").evaluate("img => img.style.opacity") == "0.2"
    assert good.locator(".opacity-value").inner_text() == "20%"
    good.locator(".opacity").fill("60")
    page.evaluate("document.activeElement.blur()")

    # the noise image: the "not a brain MRI" banner; the text file: its error line
    banner = card(page, "noise.png").locator(".banner")
    assert banner.is_visible() and "Not a brain MRI" in banner.inner_text()
    assert card(page, "noise.png").locator(".verdict-label").inner_text() == "Not a brain MRI"
    error = card(page, "notes.txt").locator(".error-line")
    assert error.is_visible()
    assert "notes.txt" in error.inner_text() and "not a JPEG, PNG, BMP, TIFF or DICOM image" in error.inner_text()
    assert card(page, "notes.txt").locator(".bar").count() == 0

    page.screenshot(path=str(artifacts() / "serve_desktop.png"), full_page=True)
    good.screenshot(path=str(artifacts() / "serve_result.png"))

    # phone width: everything fits, no horizontal scrolling
    page.set_viewport_size({"width": 360, "height": 780})
    page.wait_for_timeout(200)
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    assert max(widths[:2]) <= widths[2] == 360, widths
    page.screenshot(path=str(artifacts() / "serve_phone.png"), full_page=True)
    assert Image.open(artifacts() / "serve_phone.png").width == 360

    assert console.unexpected(allowed_statuses=(415,)) == []
    assert sum("Failed to load resource" in e for e in console.errors) <= 1  # the text file's 415 only
    page.close()
    lines = log.read_text()
    assert "POST /v1/predict 200" in lines and "POST /v1/predict 415" in lines and "POST /v1/explain 200" in lines


def volume_file() -> dict:
    """A NIfTI volume of 12 copies of the slice, gzipped: every slice tumour evidence for the tiny model."""
    import gzip

    import nibabel

    gray = slice_rgb(label=0, size=128, seed=7)[:, :, 0].astype(np.float32)
    data = np.repeat(gray.T[::-1, ::-1, None], 12, axis=2)  # array axes (x, y, z): z the axial axis of np.eye(4)
    data = np.pad(data, ((0, 0), (0, 0), (2, 2)))  # and two empty slices at each end
    buffer = gzip.compress(nibabel.Nifti1Image(data, np.eye(4)).to_bytes())
    return {"name": "head.nii.gz", "mimeType": "application/gzip", "buffer": buffer}


def test_page_sums_up_a_volume_and_explains_its_first_evidence_slice(server, browser):
    url, log = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    console = Console(page)
    page.goto(url)
    page.set_input_files("#files", [volume_file()])
    volume = card(page, "head.nii.gz")
    summary = volume.locator(".volume-summary")
    summary.wait_for(timeout=60_000)
    assert "slice-level evidence, not a diagnosis" in summary.inner_text() and "predicted" in summary.inner_text()
    titles = volume.locator(".frame-title").all_inner_texts()
    assert 1 <= len(titles) <= 3 and all(t.startswith("Slice ") and "(of 12 predicted)" in t for t in titles)
    volume.locator(".heat").first.wait_for(state="visible", timeout=60_000)
    assert volume.locator(".heat").first.evaluate("img => img.complete && img.naturalWidth > 0")
    page.screenshot(path=str(artifacts() / "serve_volume.png"), full_page=True)
    assert console.unexpected() == []
    page.close()
    assert "POST /v1/explain?frame=" in log.read_text() or "POST /v1/explain 200" in log.read_text()


def test_keyboard_and_drag_and_drop(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 800, "height": 900})
    console = Console(page)
    choosers = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))  # listening before the page loads: no chooser is missed
    page.goto(url)

    # keyboard alone: Tab reaches the button, Enter opens the file chooser
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "choose":
            break
    assert page.evaluate("document.activeElement.id") == "choose"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"  # focus is visible
    page.keyboard.press("Enter")
    for _ in range(100):
        if choosers:
            break
        page.wait_for_timeout(100)
    assert len(choosers) == 1, "Enter on the button opened no file chooser"
    choosers[0].set_files([slice_file()])
    first = page.locator(".card").first
    first.locator(".heat").wait_for(state="visible", timeout=120_000)
    slider = first.locator(".opacity")
    slider.focus()
    page.keyboard.press("ArrowLeft")
    assert slider.input_value() == "55"
    assert first.locator(".heat").evaluate("img => img.style.opacity") == "0.55"

    # drag and drop onto the drop area
    data = base64.b64encode(encode(slice_rgb(label=3, seed=9), "PNG")).decode()
    page.evaluate("""data => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const drop = document.getElementById("drop");
        drop.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        drop.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", data)
    dropped = card(page, "dropped.png")
    dropped.locator(".bar").first.wait_for(timeout=60_000)
    assert dropped.locator(".bar").count() == 4
    assert console.unexpected() == []
    page.close()


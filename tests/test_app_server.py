"""``fapn app`` as a user meets it: the command serving on a loopback port, called through ``gradio_client`` and
driven in a real headless Chromium (Selenium with Debian's chromedriver).

The browser test skips when Chromium, chromedriver or Selenium are absent (Debian: ``apt-get install chromium
chromium-driver``). ``FAPN_APP_WEIGHTS="fpn.pt fapn.pt"`` runs these tests on those checkpoints instead of small
untrained ones, and ``FAPN_APP_SCREENSHOT=PATH`` keeps the browser's screenshot (how docs/images/app.png is made).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn.inference import Segmenter

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

_spec = importlib.util.spec_from_file_location("_inference_helpers", Path(__file__).with_name("test_inference.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)  # reuse make_checkpoint without a shared conftest

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(process: subprocess.Popen, url: str, log: Path, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"fapn app exited with {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"fapn app did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """``fapn app`` on a free loopback port, stopped (and waited for) after the module's tests."""
    folder = tmp_path_factory.mktemp("app_server")
    if os.environ.get("FAPN_APP_WEIGHTS"):
        weights = [Path(w) for w in os.environ["FAPN_APP_WEIGHTS"].split()]
    else:
        weights = [
            # 8 classes: the synthetic examples' ground truths score them
            _helpers.make_checkpoint(folder / "fpn.pt", num_classes=8, neck="fpn", seed=1),
            _helpers.make_checkpoint(folder / "fapn.pt", num_classes=8, neck="fapn", seed=2),
        ]
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(folder),  # the app's files and gradio's cache stay in the test's folder
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
    }
    command = [sys.executable, "-m", "fapn", "app", "--weights", *map(str, weights), "--names", "FPN", "FaPN"]
    command += ["--port", str(port), "--threads", "1", "--device", "cpu"]
    log = folder / "server.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(process, url, log)
        yield url, weights
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def natural_width(driver, selector: str) -> int:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        image = driver.find_element(By.CSS_SELECTOR, selector)
        return int(driver.execute_script("return arguments[0].naturalWidth", image) or 0)
    except StaleElementReferenceException:  # the page replaced the picture meanwhile
        return 0


def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    from fapn.app import write_examples

    image_path, _ = write_examples(tmp_path / "scene", synthetic=1, camvid=0, size=(96, 128))[0]
    return image_path, np.asarray(Image.open(image_path).convert("RGB"))


def test_segment_endpoint_through_gradio_client(server: tuple[str, list[Path]], tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, weights = server
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"), analytics_enabled=False)
    image_path, image = scene(tmp_path)
    picture, labels, disagreement, table, gallery, summary, notes = client.predict(
        handle_file(str(image_path)), None, api_name="/segment"
    )
    shown = np.asarray(Image.open(picture))
    assert shown.shape[1] == 3 * 128 + 2 * 4  # image | FPN | FaPN
    for weight, label_file in zip(weights, labels):
        expected = Segmenter.from_checkpoint(weight).predict(image)
        assert np.array_equal(np.asarray(Image.open(label_file)), expected)
    assert "| FPN |" in table and "| FaPN |" in table and "disagree" in table
    assert len(gallery) == 1 and "FAM 0 (stride 8)" in summary
    assert Image.open(disagreement).size[0] == 128
    # bad uploads: a clear error each, and the server answers the next request
    (tmp_path / "notes.txt").write_text("not a picture\n" * 50)
    with pytest.raises(AppError, match="not an image Pillow can read"):
        client.predict(handle_file(str(tmp_path / "notes.txt")), None, api_name="/segment")
    data = image_path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(AppError, match="truncated or damaged"):
        client.predict(handle_file(str(tmp_path / "cut.png")), None, api_name="/segment")
    wrong = tmp_path / "wrong_gt.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(wrong)
    *_, notes = client.predict(handle_file(str(image_path)), handle_file(str(wrong)), api_name="/segment")
    assert "ground truth not used: the ground truth is 10x10 px but the image is 128x96" in notes
    # a client naming a file on the server instead of uploading one is refused, and nothing of it is read
    secret = Path(__file__)
    body = json.dumps({"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, None]}).encode()
    request = urllib.request.Request(f"{url}gradio_api/call/segment", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/segment/{event}", timeout=60) as response:
        stream = response.read().decode()
    assert stream.startswith("event: error") and "not uploaded by a user" in stream
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(Image.open(image_path).convert("L")).astype(np.uint16) * 257).save(buffer, "PNG")
    (tmp_path / "deep.png").write_bytes(buffer.getvalue())
    *_, notes = client.predict(handle_file(str(tmp_path / "deep.png")), None, api_name="/segment")
    assert "16-bit image" in notes


@pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and CHROMEDRIVER and importlib.util.find_spec("selenium")),
    reason="needs Chromium, chromedriver and selenium (Debian: apt-get install chromium chromium-driver)",
)
def test_page_in_a_headless_browser(server: tuple[str, list[Path]], tmp_path: Path, monkeypatch) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium_", dir=tmp_path)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1700",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium look for drivers online
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-upload input[type=file]"))
        image_path, _ = scene(tmp_path)
        upload.send_keys(str(image_path))

        def results_shown(d: webdriver.Chrome) -> bool:
            pictures = d.find_elements(By.CSS_SELECTOR, "#comparison img, #disagree img")
            table = d.find_element(By.ID, "scores").text
            return len(pictures) == 2 and all(p.get_attribute("src") for p in pictures) and "FaPN" in table

        wait.until(results_shown)
        table = driver.find_element(By.ID, "scores").text
        assert "FPN" in table and "FaPN" in table and " ms" in table
        assert natural_width(driver, "#comparison img") == 3 * 128 + 2 * 4  # image | FPN | FaPN
        files = driver.find_element(By.ID, "labels").text.replace("\n", "")  # the page breaks names before .png
        assert "0_FPN_labels.png" in files and "1_FaPN_labels.png" in files, files
        # an example with its ground truth: a ground-truth panel and each model's scores
        examples = driver.find_element(By.ID, "examples")
        examples.find_element(By.XPATH, ".//*[normalize-space(text())='synthetic_street_0.png']").click()
        wait.until(lambda d: "boundary mIoU" in d.find_element(By.ID, "scores").text)
        wait.until(lambda d: natural_width(d, "#comparison img") == 4 * 320 + 3 * 4)  # image | gt | FPN | FaPN
        screenshot = Path(os.environ.get("FAPN_APP_SCREENSHOT") or tmp_path / "app.png")
        driver.save_screenshot(str(screenshot))
        assert Image.open(screenshot).size[0] > 0
        tab = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Alignment" in b.text)
        tab.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alignment img"))
        assert "FAM 0 (stride 8)" in driver.find_element(By.ID, "alignment-text").text
        # a bad upload: the page says why, and keeps working
        (tmp_path / "notes.txt").write_text("not a picture\n" * 50)
        driver.find_element(By.CSS_SELECTOR, "button[role=tab]").click()  # back to the predictions
        labels = [b.get_attribute("aria-label") for b in driver.find_elements(By.CSS_SELECTOR, "#image-upload button")]
        clear = driver.find_element(By.CSS_SELECTOR, "#image-upload button[aria-label=Clear]")
        assert clear is not None, labels
        clear.click()
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-upload input[type=file]"))
        upload.send_keys(str(tmp_path / "notes.txt"))
        wait.until(lambda d: "not an image Pillow can read" in d.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.quit()

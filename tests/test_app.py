"""The demo page: its parts on their own, and the page itself driven in headless Chromium.

The browser test needs the app extra (`pip install -e ".[app]"`: Gradio, Selenium) and Debian's
Chromium and ChromeDriver (`apt-get install chromium chromium-driver`); `.ci/run` installs them
and runs this module. Without them the browser test skips and says which one is missing.
"""

import io
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

from rl.app import Answer, answer, bundled_scenes, describe_rounds, mask_picture
from rl.infer import Grounder, InferenceResult
from tokens import Instance

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def grounder(grid8_model):
    return Grounder(grid8_model, max_new_tokens=12)


def test_bundled_scenes_follow_the_run_and_do_not_change(grid8_model, tmp_path):
    a, b = bundled_scenes(grid8_model), bundled_scenes(grid8_model)
    assert len(a) == 6 and [t for t, _ in a] == [t for t, _ in b]
    assert all((x == y).all() for (_, x), (_, y) in zip(a, b, strict=True))
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "config.json").write_text('{"data": {"image_size": 64, "objects": [2, 3]}}')
    scenes = bundled_scenes(run / "ckpt", n=3)
    assert [img.shape for _, img in scenes] == [(64, 64, 3)] * 3


def test_rounds_are_described_in_pixels():
    img = np.zeros((100, 200, 3), np.uint8)
    r = InferenceResult(img, "q", ["a", "b"], [[], []], [Instance(None, [(0.5, 0.5)])], [],
                        moves=[[((0.25, 0.5), (0.5, 0.5))]], deleted=[[(0.1, 0.2)]])
    assert describe_rounds(r) == ("round 1: moved 1 point(s): (50, 50) -> (100, 50); "
                                  "deleted 1: (20, 20)")
    r.moves, r.deleted = [], []
    assert describe_rounds(r) == "no refinement round"


def test_mask_picture_dims_outside_the_mask():
    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = mask_picture(img, mask)
    assert (out[mask] == 200).all() and (out[~mask] == 50).all()


def test_answer_holds_what_the_page_shows(grounder):
    text, image = bundled_scenes(grounder.model_dir)[0]
    a = answer(grounder, image, text, rounds=1)
    assert isinstance(a, Answer) and a.tokens.startswith("proposal: ")
    assert a.picture.ndim == 3 and a.picture.shape[1] >= image.shape[1]
    assert a.mask.shape == image.shape and "s for the proposal" in a.timing


def _missing() -> str | None:
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            return f'{module} is not installed (pip install -e ".[app]")'
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc, seconds: float = 180) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def app_url(grid8_model, tmp_path):
    missing = _missing()
    if missing:
        pytest.skip(f"browser test: {missing}")
    port = _free_port()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "rl.app", "--model", str(grid8_model),
                             "--port", str(port), "--max-new-tokens", "12"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # Chromium as root, with no network beyond loopback (the machine notes' settings).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1300",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_the_page_grounds_a_bundled_scene_in_a_real_browser(app_url, grounder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser(tmp_path)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 180)
        first = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scene label"))[0]
        first.click()  # the first bundled scene: its image and expression fill the inputs
        query = driver.find_element(By.CSS_SELECTOR, "#query textarea")
        wait.until(lambda d: query.get_attribute("value"))
        expression = query.get_attribute("value")
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        tokens = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#tokens textarea")
                            .get_attribute("value"))
        src = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#picture img")
                         .get_attribute("src"))
        timing = driver.find_element(By.CSS_SELECTOR, "#timing textarea").get_attribute("value")
        driver.save_screenshot(os.environ.get("GETOK_APP_SCREENSHOT",
                                              str(tmp_path / "app.png")))
    finally:
        driver.quit()
    with urllib.request.urlopen(src, timeout=30) as r:
        shown = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
    # What the browser shows is what the grounder answers for that scene and expression.
    text, image = bundled_scenes(grounder.model_dir)[0]
    assert expression == text
    expected = answer(grounder, image, text, rounds=1)
    assert tokens == expected.tokens and tokens.startswith("proposal: ")
    assert shown.shape == expected.picture.shape and (shown == expected.picture).all()
    assert "s for the proposal and" in timing


def test_app_refuses_a_folder_without_a_vocabulary(tmp_path):
    from rl.app import main

    with pytest.raises(SystemExit, match="spatial_vocab.json"):
        main(["--model", str(tmp_path)])

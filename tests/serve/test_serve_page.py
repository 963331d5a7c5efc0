"""The web page of `diffcli serve --http` (docs/serve.md, "The page"), in a real headless Chromium driven by
selenium, against a real server on 127.0.0.1; and what the page's routes may and may not serve.

The browser is the OS's chromium and its chromedriver (`.ci/run` installs them): without them this
module fails, it does not skip. DIFFCLI_PAGE_SCREENSHOT=PATH also writes the screenshot docs/serve.md
shows (docs/images/serve-page.png was made so).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from serving import RunningServer, server_env

KEY = "k" * 24
PAGE_ROUTES = ("/", "/page/app.js", "/page/style.css", "/v1/gallery", "/v1/gallery/kept.png", "/v1/events")


def start(tmp_path_factory, *args: str) -> RunningServer:
    directory = Path(tempfile.mkdtemp(prefix="dcs", dir="/tmp"))
    out = tmp_path_factory.mktemp("http-out")
    env = server_env(tmp_path_factory.mktemp("serverhome"))
    for name in ("DIFFCLI_API_KEY", "DIFFCLI_API_AUTH"):
        env.pop(name, None)
    server = RunningServer(directory, env, ["--idle", "10m", "--http", "127.0.0.1:0", "--output-dir", str(out), *args])
    server.http = server.status()["http"]
    server.out = out
    return server


def kept(server) -> Path:
    """An image of SERVER's output directory (made here, after the page's screenshot)."""
    path = server.out / "kept.png"
    if not path.exists():
        Image.new("RGB", (8, 8), (200, 40, 40)).save(path)
    return path


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    server = start(tmp_path_factory)
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    server = start(tmp_path_factory, "--api-key", KEY)
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, (
        "the page's browser test needs chromium and chromedriver: apt-get install chromium chromium-driver "
        "(.ci/run installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,820"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # no Selenium Manager: offline
    yield driver
    driver.quit()


def fetch(server, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    """(status, headers, body) of one request sent exactly as written (no path normalisation)."""
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest(method, path, skip_host="Host" in (headers or {}))
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        if path.startswith("/v1/events") and response.status == 200:
            return response.status, response.headers, b""  # a stream: open is all this needs
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def wait(driver, condition, timeout: float = 120):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


FETCH_BASE64 = """
const done = arguments[arguments.length - 1];
fetch(arguments[0]).then((r) => r.arrayBuffer()).then((buffer) => {
  let text = "";
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  done(btoa(text));
}).catch((error) => done("ERROR " + error));
"""

WATCH_PROGRESS = """
window.seenProgress = [];
const bar = document.getElementById("progress");
new MutationObserver(() => window.seenProgress.push(Number(bar.value)))
  .observe(bar, {attributes: true, attributeFilter: ["value"]});
"""


def fill(driver, **fields) -> None:
    for name, value in fields.items():
        box = driver.find_element(By.ID, name)
        box.clear()
        box.send_keys(str(value))


def test_the_page_makes_the_clis_image(web, browser, tmp_path):
    browser.get(f"http://{web.http}/")
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "sampler")).options) > 1)
    model = Select(browser.find_element(By.ID, "model"))
    assert "tiny" in [o.get_attribute("value") for o in model.options]
    model.select_by_value("tiny")
    Select(browser.find_element(By.ID, "sampler")).select_by_value("Euler a")
    fill(browser, steps=12, cfg=4, seed=5)
    fill(browser, prompt="red house on the left, snowy ground")
    browser.execute_script(WATCH_PROGRESS)
    browser.find_element(By.ID, "prompt").send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard submits it
    wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith(("Done", "Failed", "Refused", "Lost")))
    assert browser.find_element(By.ID, "status").text.startswith("Done"), browser.find_element(By.ID, "status").text

    seen = browser.execute_script("return window.seenProgress")
    moving = [v for v in seen if 0 < v < 1]
    assert len(set(moving)) >= 3 and moving == sorted(moving) and seen[-1] == 1, seen  # the bar moved, forward

    card = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery li.fresh"))[0]
    image = card.find_element(By.TAG_NAME, "img")
    wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    raw = browser.execute_async_script(FETCH_BASE64, image.get_attribute("src"))
    assert not raw.startswith("ERROR"), raw
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(raw))).convert("RGB"))

    cli = subprocess.run(
        [sys.executable, "-m", "diffcli", "txt2img", "red house on the left, snowy ground", "--model", "tiny"]
        + ["--steps", "12", "--cfg", "4", "--seed", "5", "--scheduler", "euler-a", "--no-server", "--quiet"]
        + ["-o", f"{tmp_path}/"],
        capture_output=True,
        text=True,
        env=web.env,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    with Image.open(cli.stdout.split()[0]) as made:
        assert np.array_equal(shown, np.asarray(made.convert("RGB")))  # the page's image is the CLI's

    # "use these settings" puts them back in the form; "download" is the same file
    card.find_element(By.CSS_SELECTOR, "button.use").click()
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "red house on the left, snowy ground"
    assert [browser.find_element(By.ID, i).get_attribute("value") for i in ("steps", "seed")] == ["12", "5"]
    assert Select(browser.find_element(By.ID, "sampler")).first_selected_option.get_attribute("value") == "Euler a"
    download = card.find_element(By.CSS_SELECTOR, "a[download]")
    assert download.get_attribute("href") == image.get_attribute("src")


def test_the_page_starts_from_an_uploaded_image(web, browser, tmp_path):
    source = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(source)
    browser.get(f"http://{web.http}/")
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "sampler")).options) > 1)
    browser.find_element(By.ID, "init-image").send_keys(str(source))
    wait(browser, lambda d: d.find_element(By.ID, "init-preview").is_displayed())
    fill(browser, prompt="watercolor", steps=4, strength=0.5, seed=2)
    browser.find_element(By.ID, "generate").click()
    wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith(("Done", "Failed", "Refused", "Lost")))
    assert browser.find_element(By.ID, "status").text.startswith("Done"), browser.find_element(By.ID, "status").text
    fresh = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery li.fresh"))
    assert "watercolor" in fresh[0].text
    if os.environ.get("DIFFCLI_PAGE_SCREENSHOT"):
        screenshot(browser, web, Path(os.environ["DIFFCLI_PAGE_SCREENSHOT"]))


def screenshot(browser, web, path: Path) -> None:
    """The page after a few images, as docs/serve.md shows it (a small PNG: 256 colours)."""
    browser.get(f"http://{web.http}/")
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "sampler")).options) > 1)
    for prompt, seed in (("castle at dusk", 42), ("red house on the left, snowy ground, at night", 7)):
        fill(browser, prompt=prompt, steps=20, seed=seed)
        browser.find_element(By.ID, "generate").click()
        wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
    wait(browser, lambda d: d.execute_script("return [...document.images].every((i) => i.complete)"))
    browser.execute_script("window.scrollTo(0, 0)")
    png = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    png.quantize(256).save(path, optimize=True)


def test_the_page_fits_a_phone(web, browser):
    browser.set_window_size(390, 844)
    try:
        browser.get(f"http://{web.http}/")
        wait(browser, lambda d: len(Select(d.find_element(By.ID, "sampler")).options) > 1)
        root = "document.documentElement"
        overflow = browser.execute_script(f"return {root}.scrollWidth - {root}.clientWidth")
        assert overflow <= 0  # nothing wider than the window (less its scrollbar): no sideways scrolling
        prompt = browser.find_element(By.ID, "prompt")
        assert prompt.size["width"] > 250  # the form takes the width
        ActionChains(browser).send_keys(Keys.TAB).perform()  # the keyboard reaches the form
        focused = browser.switch_to.active_element
        assert focused.tag_name in ("textarea", "input", "select", "button", "a")
    finally:
        browser.set_window_size(1100, 820)


def test_the_page_and_its_files(web):
    status, headers, body = fetch(web, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and b"/page/app.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert b"http://" not in body and b"https://" not in body  # nothing from elsewhere: works offline
    for path, kind in (("/page/app.js", "text/javascript"), ("/page/style.css", "text/css")):
        status, headers, body = fetch(web, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and b"https://" not in body
    for path in ("/page/", "/page/index.html", "/page/../http.py", "/page/app.js/../../http.py", "/index.html"):
        assert fetch(web, path)[0] == 404, path


def test_the_gallery_serves_the_output_directory_and_nothing_else(web, tmp_path):
    kept(web)
    outside = web.out.parent / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    (web.out / "link.png").symlink_to(outside)  # a link in the folder, to a file outside it
    (web.out / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(web.out / "sub" / "inner.png")
    Image.new("RGB", (8, 8)).save(web.out / ".hidden.png")
    status, _, body = fetch(web, "/v1/gallery/kept.png")
    assert status == 200 and body == (web.out / "kept.png").read_bytes()
    escapes = [
        "/v1/gallery/link.png",
        "/v1/gallery/../secret.png",
        "/v1/gallery/..%2Fsecret.png",
        "/v1/gallery/%2e%2e%2fsecret.png",
        "/v1/gallery/..%5Csecret.png",
        "/v1/gallery//" + str(outside).lstrip("/"),
        "/v1/gallery/" + urllib.parse.quote(str(outside), safe=""),
        "/v1/gallery/sub/inner.png",
        "/v1/gallery/sub%2Finner.png",
        "/v1/gallery/.hidden.png",
        "/v1/gallery/..",
        "/v1/gallery/kept.png%00.png",
        "/v1/gallery/",
    ]
    for path in escapes:
        status, _, body = fetch(web, path)
        assert status == 404 and b"\x89PNG" not in body, path
    status, _, body = fetch(web, "/v1/gallery")
    names = [item["name"] for item in json.loads(body)["images"]]
    assert "kept.png" in names and not {"link.png", ".hidden.png", "inner.png", "secret.png"} & set(names)
    assert fetch(web, "/v1/gallery/kept.png", method="POST", headers={"Content-Type": "application/json"})[0] == 405


def test_the_page_events_and_gallery_obey_host_origin_and_key(web, keyed):
    kept(web), kept(keyed)
    for path in PAGE_ROUTES:
        assert fetch(web, path)[0] == 200, path
        assert fetch(web, path, {"Host": "evil.example"})[0] == 403, path  # DNS rebinding
        assert fetch(web, path, {"Origin": "http://evil.example"})[0] == 403, path  # a page of another site
        assert fetch(web, path, {"Origin": f"http://{web.http}"})[0] == 200, path  # the page itself
        status, headers, _ = fetch(keyed, path)
        assert status == 401 and "Basic" in headers["WWW-Authenticate"], path  # a browser asks for the key
        basic = "Basic " + base64.b64encode(f"me:{KEY}".encode()).decode()
        assert fetch(keyed, path, {"Authorization": basic})[0] == 200, path
        assert fetch(keyed, path, {"Authorization": f"Bearer {KEY}", "Origin": "http://evil.example"})[0] == 403
    job = b'{"prompt": "x", "steps": 1}'
    assert (
        fetch(web, "/v1/jobs", {"Origin": "http://evil.example", "Content-Type": "application/json"}, "POST", job)[0]
        == 403
    )
    assert fetch(web, "/v1/jobs", {"Content-Type": "text/plain"}, "POST", job)[0] == 415  # what a form can send
    assert fetch(keyed, "/v1/jobs", {"Content-Type": "application/json"}, "POST", job)[0] == 401

"""The MLflow UI over a small real task library, in a real headless browser.

Real parts: a task library written by `TaskLibrary` into an embedded MLflow store (three types,
the `champion` alias on one version of each, the descriptions the deploy step writes), served by
`mlflow ui` on 127.0.0.1 as `make ui` does, and Debian's chromium driven by Selenium through
chromedriver. The test opens the registry page, checks that every type's model shows its
`champion` alias, opens one model's page for its description, and saves screenshots to
build/screenshots/.

`make test` installs chromium when it is missing (Makefile target `browser`). Without it the
test fails under CI=true and is skipped elsewhere, saying why.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from entgan.gan.bundle import BundleHeader, save_bundle
from entgan.library.registry import TaskLibrary
from entgan.library.report import model_description
from tests.conftest import hang_guard
from tests.servers import HOST, _bin, _start, _stop, _wait, free_port, mlflow_healthy

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "screenshots"
TYPES = ["box", "robot", "table"]
# Headless chromium on a closed network: no sandbox as root, no background connections.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1500,1000"]


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    why = "chromium and chromedriver are not installed; run `make browser` (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why + " - this test fails instead under CI=true")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Three types, two versions of `box` (v2 is champion), one of the others."""
    root = tmp_path_factory.mktemp("ui-library")
    library = TaskLibrary(f"sqlite:///{root / 'mlflow.db'}", "uitest", (root / "mlartifacts").as_uri())
    files = root / "files"
    files.mkdir()
    save_bundle(files / "model.safetensors", {"G/weight": torch.zeros(2)}, BundleHeader(kind="model"))
    for run, types in ((1, TYPES), (2, ["box"])):  # two runs: the second trains box again
        run_id = library.start_run(f"kfp-ui-test-{run}", {"rounds": 2}, {"entgan.kfp_run_id": f"ui-test-{run}"})
        for t in types:
            library.log_files(run_id, files, f"tasks/{t}")
            version = library.register(t, run_id, f"tasks/{t}", {"entgan.data_type": t}, description=f"{t} v{run}")
            library.set_champion(t, version.version)
            library.describe_model(t, model_description(t, "uitest", ["edge-1", "edge-2"], version.version,
                                                        {"version": version.version, "promoted": True,
                                                         "reason": "first version" if run == 1 else "FID 0.52 < 0.61"}))
        library.end_run(run_id)
    return root


@pytest.fixture(scope="module")
def ui(library):
    """`mlflow ui` on the library, as `make ui` starts it."""
    port = free_port()
    log = library / "mlflow-ui.log"
    cmd = [_bin("mlflow"), "ui", "--backend-store-uri", f"sqlite:///{library / 'mlflow.db'}",
           "--host", HOST, "--port", str(port), "--workers", "1"]
    proc = _start(cmd, dict(os.environ), library, log)
    url = f"http://{HOST}:{port}"

    try:
        _wait(lambda: mlflow_healthy(url), proc, log, "mlflow ui", timeout=hang_guard(120))
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver = _browser_paths()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(60)
    try:
        yield session
    finally:
        session.quit()


def _wait_for_text(browser, texts: list[str], timeout: float = 60) -> str:
    """The page's text once it contains every one of `texts` (the UI renders after its API calls)."""
    from selenium.webdriver.common.by import By

    deadline, body = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        body = browser.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    raise AssertionError(f"the page never showed {texts}; it shows:\n{body[:2000]}")


def _dismiss_overlays(browser) -> None:
    """Close what the UI opens over the page on a first visit (a what's-new dialog, the assistant
    panel), so that the screenshot shows the registry."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        try:
            if button.is_displayed():
                button.click()
        except WebDriverException:  # already gone with the dialog it belonged to
            pass
    time.sleep(1)


def _row_of(browser, text: str) -> str:
    """The text of the registry table row that names `text`."""
    from selenium.webdriver.common.by import By

    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tr, [role='row']") if text in r.text]
    assert rows, f"no table row names {text}"
    return min(rows, key=len)  # the innermost row


def test_registry_page_shows_every_types_champion(ui, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{ui}/#/models")
    names = [f"entgan-uitest-{t}" for t in TYPES]
    _wait_for_text(browser, names)
    _dismiss_overlays(browser)
    browser.save_screenshot(str(SCREENSHOTS / "mlflow-models.png"))
    for t, name in zip(TYPES, names):
        row = _row_of(browser, name)
        assert "champion" in row, f"{name}: the registry row shows no champion alias: {row!r}"
        expected = "Version 2" if t == "box" else "Version 1"
        assert f"champion : {expected}" in " ".join(row.split()), f"{name}: champion should be {expected}: {row!r}"
    assert (SCREENSHOTS / "mlflow-models.png").stat().st_size > 10_000


def test_model_page_shows_its_description(ui, browser):
    browser.get(f"{ui}/#/models/entgan-uitest-box")
    body = _wait_for_text(browser, ["entgan-uitest-box", "held by edges"])
    _dismiss_overlays(browser)
    browser.save_screenshot(str(SCREENSHOTS / "mlflow-model-box.png"))
    assert "version 2 is" in body.lower() and "champion" in body

"""End to end: a real suite through `ganbench run`, then its report.html in headless Debian chromium.

The browser checks what a reader sees: no console errors (the page's Content-Security-Policy makes
any external or inline-script load one), every <img> decoded, the ranking table present. A
screenshot of the whole page is saved under test-artifacts/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ganbench.cli import main

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DRIVER_NAMES = ("chromedriver",)
BROWSER_NAMES = ("chromium", "chromium-browser")

SUITE = """
[suite]
name = "report-e2e <b>&amp;"
question = "Does spectral norm change a tiny DCGAN? | a pipe, [brackets] and <tags>"
expects = "Miyato et al. 2018: spectral norm stabilises D."
seeds = [0, 1]
baseline = "vanilla"

[dataset]
name = "mnist5k"

[defaults]
architecture = {{ name = "dcgan", width = 8 }}
batch_size = 16
steps = {steps}
log_every = 2
eval_every = {eval_every}
grid_size = 16
eval_samples = 64
real_samples = 200
metrics = [{metrics}]

[scales.smoke]  # the report's smoke banner is tested too; these are the run lengths
steps = {steps}
eval_every = {eval_every}
eval_samples = 64
real_samples = 200

[[configs]]
name = "vanilla"

[[configs]]
name = "spectral-norm"
tricks = ["spectral-norm"]
"""


def find(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def browser_paths() -> tuple[str, str]:
    """chromium and chromedriver from Debian (`make browser`); CI must have them, elsewhere skip."""
    browser, driver = find(BROWSER_NAMES), find(DRIVER_NAMES)
    if browser and driver:
        return browser, driver
    missing = ", ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
    message = f"{missing} not installed; `make browser` installs Debian's chromium and chromium-driver"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def open_in_chromium(html: Path, screenshot: Path) -> dict:
    """Load `html` headless; return its console log, images and tables; save a full-page screenshot."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so selenium-manager never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.get(html.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({src: i.src.slice(0, 30), complete: i.complete,"
            " width: i.naturalWidth, alt: i.alt}))")
        found = {
            "log": driver.get_log("browser"),
            "images": images,
            "ranking_rows": driver.execute_script("return document.querySelectorAll('table.ranking tbody tr').length"),
            "title": driver.title,
            "scripts": driver.execute_script("return document.scripts.length"),
        }
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height), 16000))
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        return found
    finally:
        driver.quit()


def run_suite_cli(tmp_path: Path, steps: int, eval_every: int, metrics: str, jobs: str) -> Path:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(steps=steps, eval_every=eval_every, metrics=metrics))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--scale", "smoke", "--out", str(out), "--jobs", jobs]) == 0
    return out


def check_report(out: Path, screenshot: Path) -> dict:
    for name in ("report.html", "report.md", "results.csv", "results.parquet"):
        assert (out / name).is_file(), name
    suite = json.loads((out / "suite.json").read_text())
    assert len(pd.read_csv(out / "results.csv")) == len(suite["runs"]) == 4
    found = open_in_chromium(out / "report.html", screenshot)
    print(f"screenshot: {screenshot}")
    assert found["log"] == [], found["log"]
    assert found["scripts"] == 0
    assert found["images"] and all(i["complete"] and i["width"] > 0 for i in found["images"]), found["images"]
    assert all(i["src"].startswith("data:image/png;base64,") for i in found["images"])
    assert found["ranking_rows"] == 2
    assert found["title"] == "ganbench report: report-e2e <b>&amp;"  # the suite's name as text, not markup
    return found


def test_real_suite_report_in_chromium(tmp_path):
    browser_paths()  # fail (CI) or skip before training when there is no browser
    out = run_suite_cli(tmp_path, steps=8, eval_every=4, metrics='"classifier"', jobs="0")
    found = check_report(out, ARTIFACTS / "report-e2e.png")
    # 6 figures at least (class FD, classes covered, losses, D outputs, ...) and 2 sample grids per run.
    assert len(found["images"]) >= 4 + 4 * 2
    html = (out / "report.html").read_text()
    assert "SMOKE SCALE" in html and "class FD" in html and "spectral-norm" in html


@pytest.mark.slow
def test_real_fid_suite_report_in_chromium(tmp_path):
    """FID and KID through Inception (slow on a CPU), runs in their own processes."""
    browser_paths()
    out = run_suite_cli(tmp_path, steps=4, eval_every=2, metrics='{ name = "fid" }', jobs="1")
    check_report(out, ARTIFACTS / "report-e2e-fid.png")
    html = (out / "report.html").read_text()
    assert "Ranking by final FID" in html and "KID" in html and "inception-v3-compat" in html

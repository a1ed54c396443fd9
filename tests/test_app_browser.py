"""The dashboard in a real browser: `streamlit run app` on 127.0.0.1, headless Chromium (Debian's,
driven by playwright; never a downloaded browser) opens it, switches page, takes a screenshot."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from layer_analysis.probe.data import shared_data_root
from layer_analysis.probe.report import find_browser

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("LAYER_ANALYSIS_REQUIRE_BROWSER") == "1"  # set by .ci/run


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outside_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def server(dashboard_runs, tmp_path_factory):
    port = _free_port()
    runs = tmp_path_factory.mktemp("browser") / "runs"  # a copy: the New run test adds a run
    shutil.copytree(dashboard_runs, runs)
    env = {**os.environ, "LAYER_ANALYSIS_RUNS": str(runs)}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app", "--server.port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"streamlit exited: {process.stdout.read()}")
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not answer within 60 s")
        yield port, url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_listens_on_loopback_only(server):
    port, _ = server
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((address, port)) != 0, f"the dashboard answers on {address}"


@pytest.fixture
def chromium():
    """Debian's Chromium driven by playwright (a failure where CI requires the browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    browser_path = find_browser()
    if browser_path is None:
        _missing("no Chromium (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def _outside(requested: list[str], url: str) -> list[str]:
    return sorted({u for u in requested if not u.startswith((url, "data:", "blob:", "about:"))})


def test_browser_loads_switches_page_and_renders(server, chromium, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    _, url = server
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url, timeout=60_000)
    page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)  # let plotly finish drawing
    shot = tmp_path / "overview.png"
    page.screenshot(path=str(shot), full_page=True)
    errors = page.locator("[data-testid='stException']").count()
    assert errors == 0
    outside = _outside(requested, url)
    assert not outside, f"the dashboard asked beyond 127.0.0.1: {outside}"
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    background = max(colours)[0] / (image.width * image.height)
    assert len(colours) > 100, "the screenshot is (nearly) blank"
    assert background < 0.95, "the page is almost all one colour"


# Every value the progress bar shows, recorded in the page as it changes.
RECORD_PROGRESS = """() => {
  window.progressSeen = [];
  new MutationObserver(() => {
    for (const bar of document.querySelectorAll('[role="progressbar"]')) {
      const value = Number(bar.getAttribute('aria-valuenow'));
      if (window.progressSeen.at(-1) !== value) window.progressSeen.push(value);
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def test_new_run_shows_progress_and_locks_the_form(server, chromium, tiny_llama_dir):
    _, url = server
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url, timeout=60_000)
    page.get_by_role("link", name="New run").click()
    page.get_by_role("heading", name="New run").wait_for(timeout=60_000)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    path = page.get_by_label("Model directory, .gguf file, Hub id or PEFT adapter directory")
    for attempt in range(3):  # a pick made while the page still reruns can be lost: pick again
        page.get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name="other…").click()
        try:
            path.wait_for(timeout=30_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    path.fill(str(tiny_llama_dir))
    path.press("Enter")
    limit = page.get_by_label("Sentences per language (0 = all)")
    limit.wait_for(timeout=60_000)
    if shared_data_root() is not None:  # FLORES dev: 300 sentences, not the shipped 122
        _select(page, "Data", "flores-dev")
    limit.fill("300")
    limit.press("Enter")
    # UMAP (its first call compiles, ~30 s): a run that outlasts several of the 2-s redraws
    # however fast the machine (a fast one finished the rest between two redraws)
    _select(page, "Projection", "umap")
    page.wait_for_timeout(1000)
    page.evaluate(RECORD_PROGRESS)
    page.get_by_role("button", name="Start").click()
    page.get_by_role("progressbar").wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Start").is_disabled()  # no second run meanwhile
    assert limit.is_disabled()
    page.get_by_text("Finished").wait_for(timeout=240_000)
    seen = [v for v in page.evaluate("window.progressSeen") if v is not None]
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.get_by_role("button", name="Start").is_disabled()  # unlocked afterwards
    assert {v for v in seen if 0 < v < 100}, seen  # it moved during the run
    assert seen == sorted(seen), seen  # and only forward
    assert not _outside(requested, url)


def _select(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (picked again if a rerun lost it)."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    for _ in range(3):
        box.click()
        page.get_by_role("option", name=option, exact=True).click()
        page.wait_for_timeout(1500)
        if box.get_by_role("combobox").input_value() == option:
            return
    raise AssertionError(f"{label}: {option} was not kept")


def _wait_idle(page) -> None:
    """Wait until the app has finished its rerun (no 'running' indicator) and plotly drew."""
    page.get_by_test_id("stStatusWidget").wait_for(state="detached", timeout=60_000)
    page.wait_for_timeout(1000)


def test_symmetric_metric_after_a_direction(server, chromium):
    """Overview: X → eng chosen for P@1, then a symmetric metric: no error, no direction to
    choose, the languages kept, the figures drawn."""
    _, url = server
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/overview", timeout=60_000)
    page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    languages = page.get_by_test_id("stMultiSelect").filter(
        has=page.get_by_text("Languages", exact=True)).get_by_label("Selected values")
    shown = languages.locator("[data-tag]").count()
    assert shown >= 2
    _select(page, "Direction", "X → eng")
    _select(page, "Metric", "MEXA (top in row and column)")
    _wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    direction = page.get_by_test_id("stSelectbox").filter(
        has=page.get_by_text("Direction", exact=True))
    assert direction.get_by_role("combobox").input_value() == "none: symmetric"
    assert direction.get_by_role("combobox").is_disabled()
    assert languages.locator("[data-tag]").count() == shown  # the languages are kept
    assert page.locator(".js-plotly-plot").count() == 2
    assert "MEXA" in page.locator(".js-plotly-plot").first.inner_text()


def test_a_reload_keeps_the_selection(server, chromium):
    """A run chosen in the sidebar is in the URL; reloading the page keeps it."""
    _, url = server
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, timeout=60_000)
    page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
    sidebar = page.get_by_test_id("stSidebar")
    picker = sidebar.get_by_test_id("stMultiSelect")
    picker.get_by_label("Selected values").locator("[data-tag]").first.wait_for(timeout=60_000)
    [newest] = picker.get_by_label("Selected values").inner_text().split()  # by default
    assert newest != "base" and f"run={newest}" in page.url
    picker.get_by_role("combobox").click()
    page.get_by_role("option", name="base").click()
    page.keyboard.press("Escape")
    _wait_idle(page)
    picker.get_by_role("button", name=f"Remove {newest}").click()  # (none chosen: the newest)
    _wait_idle(page)
    assert picker.get_by_label("Selected values").inner_text().split() == ["base"]
    assert "run=base" in page.url and newest not in page.url
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
    _wait_idle(page)
    assert "/overview" in page.url and "run=base" in page.url
    page.reload()
    page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
    _wait_idle(page)
    picker = page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect")
    assert picker.get_by_label("Selected values").inner_text().split() == ["base"]
    run = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Run", exact=True))
    assert run.get_by_role("combobox").input_value() == "base"

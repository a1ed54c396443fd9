"""The dashboard in a real browser: `streamlit run app` on 127.0.0.1, headless Chromium (Debian's,
driven by playwright; never a downloaded browser) opens it, switches page, takes a screenshot."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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
def server(dashboard_runs):
    port = _free_port()
    env = {**os.environ, "LAYER_ANALYSIS_RUNS": str(dashboard_runs)}
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


def test_browser_loads_switches_page_and_renders(server, tmp_path):
    pytest.importorskip("PIL")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    browser_path = find_browser()
    if browser_path is None:
        _missing("no Chromium (Debian: apt-get install chromium)")
    from PIL import Image

    _, url = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
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
        browser.close()
    assert errors == 0
    outside = sorted({u for u in requested
                      if not u.startswith((url, "data:", "blob:", "about:"))})
    assert not outside, f"the dashboard asked beyond 127.0.0.1: {outside}"
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    background = max(colours)[0] / (image.width * image.height)
    assert len(colours) > 100, "the screenshot is (nearly) blank"
    assert background < 0.95, "the page is almost all one colour"

"""The README (short, its two commands, its links) and the documentation site (strict, offline)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FIGURE = DOCS / "assets" / "alignment-curves.png"


def test_the_readme_is_read_in_five_minutes():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_gives_the_two_commands_the_makefile_and_ci_run():
    readme = README.read_text(encoding="utf-8")
    assert re.search(r"^make run\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_relative_link_of_the_readme_exists():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_readme_figure_is_committed_and_small():
    data = FIGURE.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) < 200_000, f"{FIGURE.name} is {len(data)} bytes; keep it under 200 kB"


def test_every_results_page_gives_the_command_that_measured_it():
    pages = sorted((DOCS / "results").glob("*.md"))
    assert len(pages) > 5
    for page in pages:
        if page.name == "index.md":
            continue
        text = page.read_text(encoding="utf-8")
        assert re.search(r"(`|^)(layer-analysis |python (benchmarks|demos)/|make (run|bench))",
                         text, re.MULTILINE), page.name


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by ``mkdocs build --strict`` (warnings, broken links and anchors fail)."""
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        pytest.skip(f"the docs build needs {', '.join(missing)} (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_docs_build_strictly(site):
    assert (site / "index.html").exists() and (site / "results" / "alignment" / "index.html").exists()
    assert (site / "assets" / "alignment-curves.png").exists()
    assert not list(site.rglob("*.py")), "helper scripts under docs/ are not published"


def test_the_site_asks_no_other_host(site):
    """No Google Fonts, no CDN: every stylesheet, script and image the pages load is local."""
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, page
        loaded = re.findall(r"<(?:link|script|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", text)
        external = [u for u in loaded if re.match(r"(https?:)?//", u)
                    and not re.search(r"<link[^>]*rel=\"canonical\"[^>]*href=\"" + re.escape(u), text)]
        assert not external, f"{page.relative_to(site)} loads {external}"


def test_the_api_reference_renders_the_library_from_its_docstrings(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("layer_analysis.probe.pipeline.execute", "layer_analysis.probe.pipeline.RunRequest",
                 "layer_analysis.probe.runs.read_run", "layer_analysis.probe.analysis.analyse"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    assert "Every check that needs no model" in api  # check_request's docstring, rendered

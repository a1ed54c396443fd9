"""How the project installs and how its packages depend on each other."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layer_analysis.probe.data import REPO_ROOT
from layer_analysis.probe.errors import StoreError
from layer_analysis.probe.files import atomic_directory

# Each package may import only what is left of it: probe <- train <- app, cli.
ALLOWED = {"probe": {"probe"}, "train": {"probe", "train"}, "app": {"probe", "train", "app"},
           "layer_analysis": {"probe", "train", "app", "cli"}}


def _imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("layer_analysis.") and n.count(".") >= 1}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package):
    for path in (REPO_ROOT / package).rglob("*.py"):
        extra = _imported_packages(path) - ALLOWED[package]
        assert not extra, f"{path.relative_to(REPO_ROOT)} imports layer_analysis.{extra}"


def test_atomic_directory_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("failed midway")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(target) as staging:
        (staging / "whole.txt").write_text("whole")
    assert (target / "whole.txt").read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(StoreError, match="could not write"), atomic_directory(target) as staging:
        pass  # target exists and replace=False: the rename fails with one clear error
    assert (target / "whole.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.slow
def test_installed_wheel_runs_on_its_own_data(tmp_path, tiny_llama_dir):
    """``pip install .`` (not editable): one ``layer_analysis`` namespace in site-packages, and
    ``layer-analysis run`` finds the shipped data without the checkout."""
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(  # the build writes build/
        ".*", "runs", "build", "dist", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("layer_analysis-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    top = {p.name for p in site.iterdir() if p.name != "bin" and not p.name.endswith(".dist-info")}
    assert top == {"layer_analysis"}, top  # no generic 'train', 'app' or 'probe' in site-packages
    assert (site / "layer_analysis" / "data" / "parallel" / "eng_Latn.txt").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import layer_analysis.probe.data as d; "
                            "print(d.named_datasets()['default'][0])"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "layer_analysis", "run", "--model",
                          str(tiny_llama_dir), "--languages", "en,de,zh", "--limit", "8",
                          "--projection", "none", "--bootstrap", "20", "--no-static",
                          "--no-progress", "--output", str(tmp_path / "runs")],
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "on default: 3 languages x 8 sentences" in run.stdout

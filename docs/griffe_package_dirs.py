"""A griffe extension for the API reference: the folders that install as sub-packages of
``layer_analysis`` (``[tool.setuptools.package-dir]`` in pyproject.toml: ``probe/`` is
``layer_analysis.probe``, and so on) are grafted onto ``layer_analysis`` when griffe reads it, so
``::: layer_analysis.probe.pipeline`` renders from the sources, without importing anything."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """``{"probe": "probe", ...}``: the sub-package of ``layer_analysis`` → its folder."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on Python 3.10
    table = text.partition("[tool.setuptools.package-dir]")[2].partition("\n[")[0]
    return dict(re.findall(r'^"layer_analysis\.(\w+)"\s*=\s*"([^"]+)"', table, re.M))


class PackageDirs(griffe.Extension):
    """Graft ``probe/``, ``train/``, ``app/``, ``data/`` onto ``layer_analysis`` as they install."""

    def on_module_members(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        if mod.path != "layer_analysis":
            return
        for name, folder in package_dirs().items():
            if name not in mod.members and (ROOT / folder / "__init__.py").exists():
                package = griffe.load(folder, search_paths=[ROOT], resolve_aliases=False)
                package.name = name
                mod.set_member(name, package)

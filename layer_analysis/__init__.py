"""layer-analysis: how large language models align languages, layer by layer.

``probe`` (states → metrics → figures), ``train`` (x-models, m-models, the scaling law), ``app``
(the dashboard) and ``cli`` (the ``layer-analysis`` command) are its packages; ``api`` is the
Python front door, its functions available here (``la.api`` is the module itself, with
``adopt_model``, ``as_corpus`` and the fingerprints), and the errors they raise::

    import layer_analysis as la
    run = la.align({"en": [...], "de": [...]}, model="gemma3-270m")
    except la.DataError: ...   # also ModelError, StoreError; ProbeError is their base
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

API = ("align", "lens", "patch", "neurons", "intervene", "mine", "transfer", "transfer_compare",
       "correlate", "train", "evaluate", "fit_law", "allocate", "load", "Result")
"""What ``la.NAME`` gives from ``layer_analysis.api``."""
ERRORS = ("ProbeError", "DataError", "ModelError", "StoreError")
"""What ``la.NAME`` gives from ``layer_analysis.probe.errors``: the errors the API raises."""


def __getattr__(name: str) -> Any:
    """The API's names and the module itself (``la.api``), imported on first use: ``import
    layer_analysis`` stays cheap (the command line imports only what its command needs)."""
    if name in API or name == "api":  # by name: ``from . import api`` would ask for la.api
        api = importlib.import_module(f"{__name__}.api")
        return api if name == "api" else getattr(api, name)
    if name in ERRORS:
        return getattr(importlib.import_module(f"{__name__}.probe.errors"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API, *ERRORS, "api"})


class _FrontDoor(types.ModuleType):
    """``la.train`` is the API function, though ``layer_analysis.train`` is also a package:
    importing the package must not replace the function on this module (the package stays
    importable by its full name, ``from layer_analysis.train.loop import ...``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _FrontDoor

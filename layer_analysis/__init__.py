"""layer-analysis: how large language models align languages, layer by layer.

``probe`` (states → metrics → figures), ``train`` (x-models, m-models, the scaling law), ``app``
(the dashboard) and ``cli`` (the ``layer-analysis`` command) are its packages; ``api`` is the
Python front door, its functions available here::

    import layer_analysis as la
    run = la.align({"en": [...], "de": [...]}, model="gemma3-270m")
"""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"

API = ("align", "lens", "patch", "neurons", "intervene", "mine", "transfer", "correlate", "train",
       "evaluate", "fit_law", "allocate", "load", "Result")
"""What ``la.NAME`` gives from ``layer_analysis.api``."""


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use: ``import layer_analysis`` stays cheap (the
    command line imports only what its command needs)."""
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})


class _FrontDoor(types.ModuleType):
    """``la.train`` is the API function, though ``layer_analysis.train`` is also a package:
    importing the package must not replace the function on this module (the package stays
    importable by its full name, ``from layer_analysis.train.loop import ...``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _FrontDoor

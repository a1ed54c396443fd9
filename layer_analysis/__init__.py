"""layer-analysis: how large language models align languages, layer by layer.

``probe`` (states → metrics → figures), ``train`` (x-models, m-models, the scaling law), ``app``
(the dashboard) and ``cli`` (the ``layer-analysis`` command) are its packages.
"""

__version__ = "0.1.0"

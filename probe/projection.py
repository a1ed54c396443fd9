"""2-D projections of one layer's sentence vectors (PCA via scikit-learn, UMAP via umap-learn)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError
from .metrics import center
from .store import Activations

METHODS = ("pca", "umap")


def project(acts: Activations, layer: int, method: str = "umap", pooling: str | None = None,
            per_side: int = 200, seed: int = 0) -> pd.DataFrame:
    """Coordinates of up to ``per_side`` sentences per side at ``layer``, each side mean-centered
    (as the headline metrics are), with the sentence text for hover labels and, for PCA, the
    share of variance each axis explains (``explained_x``, ``explained_y``; NaN for UMAP)."""
    if layer not in acts.layers:
        raise DataError(f"layer {layer} was not extracted in this run (layers {acts.layers})")
    if method not in METHODS:
        raise DataError(f"unknown projection {method!r}; choose from {', '.join(METHODS)}")
    index = acts.layers.index(layer)
    blocks, rows = [], []
    for side, info in acts.manifest["sides"].items():
        vectors = center(acts.get(side, pooling)[index : index + 1])[0][:per_side]
        blocks.append(vectors.numpy())
        texts = acts.texts.get(side, [])
        rows += [{"side": side, "language": info["language"], "index": i,
                  "text": texts[i] if i < len(texts) else ""} for i in range(len(vectors))]
    data = np.concatenate(blocks)
    data = data / np.linalg.norm(data, axis=1, keepdims=True).clip(1e-12)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(data)
        shares = [float(x) for x in pca.explained_variance_ratio_]
    else:
        import umap

        neighbours = max(2, min(15, len(data) - 1))
        shares = [float("nan")] * 2  # UMAP's axes explain no share of variance
        coords = umap.UMAP(n_components=2, n_neighbors=neighbours, metric="cosine",
                           random_state=seed).fit_transform(data)
    frame = pd.DataFrame(rows)
    frame["layer"], frame["method"] = layer, method
    frame["pooling"] = pooling or acts.poolings[0]
    frame["x"], frame["y"] = coords[:, 0], coords[:, 1]
    frame["explained_x"], frame["explained_y"] = shares
    return frame

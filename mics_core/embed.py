"""The 2-D UMAP projection of a model version's fused embeddings (computed by the job)."""

from __future__ import annotations

import numpy as np


def project(embeddings: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """(N, 2) UMAP coordinates, or None with too few cases to project."""
    if len(embeddings) < 5:
        return None
    import umap

    reducer = umap.UMAP(n_neighbors=min(15, len(embeddings) - 1), min_dist=0.1, random_state=seed, n_jobs=1)
    return reducer.fit_transform(np.asarray(embeddings, np.float32))

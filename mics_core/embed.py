"""The 2-D UMAP projection of a model version's fused embeddings (computed by the job)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from mics_core.cases import LABEL, PREDICTED, case_query
from mics_core.db.models import Case, ModelKind, ModelVersion, Prediction

PROJECTION_COLUMNS = [
    "case_id",
    "case_key",
    "x",
    "y",
    "label",
    "predicted",
    "probability",
    "uncertainty",
    "conflict",
    "import batch",
]


def project(embeddings: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """(N, 2) UMAP coordinates, or None with too few cases to project."""
    if len(embeddings) < 5:
        return None
    import umap

    reducer = umap.UMAP(n_neighbors=min(15, len(embeddings) - 1), min_dist=0.1, random_state=seed, n_jobs=1)
    return reducer.fit_transform(np.asarray(embeddings, np.float32))


def projection_frame(session: Session, version_id: int) -> pd.DataFrame:
    """Every projected case of one model version with what the scatter colours by."""
    rows = session.execute(
        case_query(
            Case.id,
            Case.case_key,
            Prediction.umap_x,
            Prediction.umap_y,
            LABEL.name,
            PREDICTED.name,
            Prediction.probability,
            Prediction.uncertainty,
            Prediction.conflict,
            Case.batch_id,
            version=version_id,
            predicted_only=True,
        )
        .where(Prediction.umap_x.is_not(None))
        .order_by(Case.id)
    ).all()
    frame = pd.DataFrame(rows, columns=PROJECTION_COLUMNS)
    frame["labelled"] = frame["label"].notna().map({True: "labelled", False: "unlabelled"})
    frame["label"] = frame["label"].fillna("(unlabelled)")
    frame["import batch"] = "#" + frame["import batch"].astype(str)
    return frame


def previous_version(session: Session, version_id: int) -> ModelVersion | None:
    """The model version trained just before `version_id` (to show the feature space change)."""
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.kind == ModelKind.MICS, ModelVersion.id < version_id)
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )

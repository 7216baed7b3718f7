"""Model versions: register, activate (roll back), find the active one, tabulate them.

Two kinds of rows: `encoders` (a stage-1 pre-training, reused by later fine-tunings) and
`mics` (a full model version that predicts). Exactly one `mics` version is active; the
predictions shown are the active version's, and rolling back is activating an older one
(its predictions are kept, so nothing needs recomputing).
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import ScalarSelect, select, update
from sqlalchemy.orm import Session

from mics_core.config import TrainSettings
from mics_core.db.models import ModelKind, ModelVersion
from mics_core.errors import RequestRefused

# The one definition of "the active version", shared by the lookup and the subquery every
# screen and the export join their predictions on.
IS_ACTIVE = ModelVersion.active & (ModelVersion.kind == ModelKind.MICS)

# Out-of-fold metrics by the column name the screens show, and the key the retrain stores them under.
METRIC_COLUMNS = {
    "held-out cases": "n",
    "accuracy": "accuracy",
    "macro-F1": "macro_f1",
    "AUC": "auc",
    "ECE": "ece",
    "ECE before scaling": "ece_before_scaling",
    "Brier": "brier",
    "AURC": "aurc",
}


class RegistryError(RequestRefused):
    """A registry request that cannot be carried out; the message says why."""


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(IS_ACTIVE))


def active_version_id() -> ScalarSelect[int | None]:
    """The active version's id as a subquery, for queries that join its predictions."""
    return select(ModelVersion.id).where(IS_ACTIVE).scalar_subquery()


def latest_encoders(session: Session) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.kind == ModelKind.ENCODERS).order_by(ModelVersion.id.desc()).limit(1)
    )


def activate(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None or version.kind != ModelKind.MICS:
        raise RegistryError(f"there is no model version {version_id} that can predict")
    session.execute(update(ModelVersion).where(ModelVersion.active).values(active=False))
    version.active = True
    session.flush()
    return version


def versions(session: Session) -> list[ModelVersion]:
    """Every version that can predict, oldest first."""
    return list(
        session.scalars(select(ModelVersion).where(ModelVersion.kind == ModelKind.MICS).order_by(ModelVersion.id))
    )


def trained_with(version: ModelVersion) -> TrainSettings | None:
    """The settings `version` was trained with, nested or (saved before the split by stage) flat;
    None when it recorded none."""
    return TrainSettings.from_dict(version.settings) if version.settings else None


def version_table(rows: list[ModelVersion]) -> pd.DataFrame:
    """One row per version, in the order given: what the Train and Model quality screens and
    `models` on the command line show (each picks its columns); a metric a version lacks is NaN."""
    columns = ["version", "active", "created", "labels", *METRIC_COLUMNS, "head", "backbone"]
    return pd.DataFrame(
        [
            {
                "version": v.id,
                "active": v.active,
                "created": v.created_at,
                "labels": v.n_labels,
                **{column: v.metrics.get(key) for column, key in METRIC_COLUMNS.items()},
                "head": v.metrics.get("head"),
                "backbone": settings.pretrain.backbone if (settings := trained_with(v)) else None,
            }
            for v in rows
        ],
        columns=columns,
    ).astype({column: float for column in METRIC_COLUMNS})

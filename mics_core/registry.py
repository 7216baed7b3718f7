"""Model versions: register, activate (roll back), find the active one.

Two kinds of rows: `encoders` (a stage-1 pre-training, reused by later fine-tunings) and
`mics` (a full model version that predicts). Exactly one `mics` version is active; the
predictions shown are the active version's, and rolling back is activating an older one
(its predictions are kept, so nothing needs recomputing).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mics_core.db.models import ModelVersion


class RegistryError(ValueError):
    """A registry request that cannot be carried out; the message says why."""


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.active, ModelVersion.kind == "mics"))


def latest_encoders(session: Session) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.kind == "encoders").order_by(ModelVersion.id.desc()).limit(1)
    )


def activate(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None or version.kind != "mics":
        raise RegistryError(f"there is no model version {version_id} that can predict")
    session.execute(update(ModelVersion).where(ModelVersion.active).values(active=False))
    version.active = True
    session.flush()
    return version


def versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.kind == "mics").order_by(ModelVersion.id)))

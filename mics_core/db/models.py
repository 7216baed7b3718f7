"""The schema, designed once for every issue: cases and images, append-only
annotations, users, jobs, model versions and predictions.

Rules the schema encodes:
- an annotation is never updated or deleted; a case's current label is its newest row
  (highest id), and `label_id` NULL in the newest row means "cleared" (undo);
- a label snapshot is the highest annotation id a model saw, so no snapshot table is
  needed: the labels of snapshot N are the newest rows with id <= N;
- jobs carry their whole state in their row (status, progress, heartbeat, lease).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MODALITIES = ("wli", "nbi")
SPLITS = ("train", "val", "test")
ANNOTATION_SOURCES = ("manual", "review-accept", "review-correct", "import", "undo")
ROLES = ("annotator", "reviewer", "admin")


class JobKind(StrEnum):
    """What a job does. A retrain is the whole chain (pre-training when due, the cases'
    features, fine-tuning, prediction, UMAP); its steps are phases of that one job, not jobs
    of their own. A prepare job, queued after each import, does the chain's first two phases
    in the background, so that the next retrain is a fine-tuning."""

    RETRAIN = "retrain"
    PREPARE = "prepare"


class JobStatus(StrEnum):
    """Where a job is: queued, then running, then one of the three finished states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ModelKind(StrEnum):
    """A model version row: stage-1 `encoders` (reused by later fine-tunings) or a full `mics`
    model that predicts; only a `mics` version can be active."""

    ENCODERS = "encoders"
    MICS = "mics"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads this class attribute)
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[str]: JSON,
        list[float]: JSON,
    }


class LabelClass(Base):
    """One class of the project's class list (admin-editable, never hard-coded)."""

    __tablename__ = "label_classes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default="annotator")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportBatch(Base):
    __tablename__ = "import_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    n_imported: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Image(Base):
    """One image file in the content-addressed store (path relative to the data root)."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(3))
    computed: Mapped[bool] = mapped_column(Boolean, default=False)
    path: Mapped[str] = mapped_column(String(255))
    thumb_path: Mapped[str] = mapped_column(String(255))
    original_name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(10))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Case(Base):
    """One lesion: a WLI and an NBI image (NBI may be a computed pseudo-NBI view)."""

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_key: Mapped[str] = mapped_column(String(200), unique=True)
    wli_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), index=True)
    nbi_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), index=True)
    source: Mapped[str] = mapped_column(Text)
    batch_id: Mapped[int] = mapped_column(ForeignKey("import_batches.id"), index=True)
    split: Mapped[str | None] = mapped_column(String(5))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    wli: Mapped[Image | None] = relationship(foreign_keys=[wli_image_id])
    nbi: Mapped[Image | None] = relationship(foreign_keys=[nbi_image_id])


class Annotation(Base):
    """Append-only label history; the newest row of a case is its current label."""

    __tablename__ = "annotations"
    __table_args__ = (Index("ix_annotations_case_id_id", "case_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    label_id: Mapped[int | None] = mapped_column(ForeignKey("label_classes.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    suggestion_shown: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    kind: Mapped[str] = mapped_column(String(20))  # a ModelKind
    checkpoint_path: Mapped[str] = mapped_column(String(255))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    class_names: Mapped[list[str]] = mapped_column(default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    label_snapshot: Mapped[int | None] = mapped_column(Integer)
    n_labels: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # a JobKind
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(10), default=JobStatus.QUEUED)
    phase: Mapped[str | None] = mapped_column(String(40))
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    # [[phase, step, loss], ...] as reported (at most once a second): the loss curve.
    curve: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    worker_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    label_snapshot: Mapped[int | None] = mapped_column(Integer)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))


class Prediction(Base):
    """One case's prediction by one model version (the active version's are shown)."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("model_version_id", "case_id"),
        Index("ix_predictions_model_version_id_uncertainty", "model_version_id", "uncertainty"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("label_classes.id"))
    probability: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    probs: Mapped[list[float]] = mapped_column(default=list)
    uncertainty: Mapped[float] = mapped_column(Float)
    uncertainty_wli: Mapped[float | None] = mapped_column(Float)
    uncertainty_nbi: Mapped[float | None] = mapped_column(Float)
    conflict: Mapped[float | None] = mapped_column(Float)
    wli_label_id: Mapped[int | None] = mapped_column(ForeignKey("label_classes.id"))
    nbi_label_id: Mapped[int | None] = mapped_column(ForeignKey("label_classes.id"))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    umap_x: Mapped[float | None] = mapped_column(Float)
    umap_y: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A worker process; alive while its heartbeat is recent (the app starts one when none is).

    A worker that stops cleanly removes its row; one killed outright is marked "gone" by the
    next worker or app that finds its heartbeat older than the lease (the row is its trace)."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10), default="alive", server_default="alive")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))

"""The job table as a queue: enqueue, claim, progress, cancel, leases.

Claiming is one conditional UPDATE on the oldest queued row. On PostgreSQL the row is
picked with `FOR UPDATE SKIP LOCKED`, so workers on several machines never claim the
same job; on SQLite the database's single write lock makes the UPDATE atomic (one
worker per SQLite file is the supported setup).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mics_core.db.models import Job, JobKind, JobStatus, utcnow
from mics_core.errors import RequestRefused

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
LOG_TAIL_CHARS = 4000
CURVE_POINTS = 5000


# What each progress phase of a job is called on the screens.
PHASES = {
    "pretrain": "pre-training the encoders",
    "features": "encoding the cases' views",
    "finetune": "fine-tuning",
    "predict": "predicting",
    "umap": "UMAP",
}


class JobError(RequestRefused):
    """A job request that cannot be carried out; the message says why."""


def enqueue(session: Session, kind: str, params: dict[str, Any] | None = None, user_id: int | None = None) -> Job:
    if kind not in tuple(JobKind):
        raise JobError(f"unknown job kind {kind!r}; use one of {', '.join(JobKind)}")
    job = Job(kind=kind, params=params or {}, status=JobStatus.QUEUED, requested_by=user_id)
    session.add(job)
    session.flush()
    return job


def request_retrain(session: Session, params: dict[str, Any] | None = None, user_id: int | None = None) -> Job:
    """A retrain, at most once in the queue: joins a queued retrain, else queues one (even
    behind a running one, so the labels added meanwhile are trained on next)."""
    queued = session.scalar(
        select(Job)
        .where(Job.kind == JobKind.RETRAIN, Job.status == JobStatus.QUEUED)
        .order_by(Job.id)
        .with_for_update()
    )
    return queued or enqueue(session, JobKind.RETRAIN, params, user_id)


def request_prepare(session: Session, user_id: int | None = None) -> Job:
    """The prepare job, at most once in the queue (a running one may predate the new cases)."""
    queued = session.scalar(
        select(Job)
        .where(Job.kind == JobKind.PREPARE, Job.status == JobStatus.QUEUED)
        .order_by(Job.id)
        .with_for_update()
    )
    return queued or enqueue(session, JobKind.PREPARE, {}, user_id)


def claim_next(session: Session, worker_id: str, kinds: tuple[str, ...] = tuple(JobKind)) -> Job | None:
    """Atomically move the oldest queued job to running for `worker_id`, a retrain before any
    prepare job (a retrain prepares what it needs itself, and someone is waiting for it); None
    when there is none."""
    oldest = (
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED, Job.kind.in_(kinds))
        .order_by(Job.kind == JobKind.PREPARE, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    now = utcnow()
    claimed = session.scalar(
        update(Job)
        .where(Job.id == oldest, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING, worker_id=worker_id, started_at=now, heartbeat_at=now, attempts=Job.attempts + 1
        )
        .returning(Job.id)
    )
    return session.get(Job, claimed, populate_existing=True) if claimed is not None else None


def report_progress(
    session: Session,
    job_id: int,
    phase: str,
    step: int,
    total: int,
    loss: float | None,
    eta: float | None,
    log_line: str | None = None,
) -> bool:
    """Write progress and the heartbeat; return whether a cancel was requested."""
    job = session.get(Job, job_id, populate_existing=True)
    job.phase, job.step, job.total, job.loss, job.eta_seconds = phase, step, total, loss, eta
    job.heartbeat_at = utcnow()
    if loss is not None and math.isfinite(loss) and len(job.curve) < CURVE_POINTS:
        job.curve = [*job.curve, [phase, step, round(float(loss), 6)]]
    if log_line:
        job.log_tail = (job.log_tail + log_line.rstrip() + "\n")[-LOG_TAIL_CHARS:]
    return job.cancel_requested


def finish(
    session: Session, job_id: int, status: str, error: str | None = None, model_version_id: int | None = None
) -> None:
    job = session.get(Job, job_id, populate_existing=True)
    job.status, job.error, job.finished_at = status, error, utcnow()
    if model_version_id is not None:
        job.model_version_id = model_version_id


def cancel(session: Session, job_id: int) -> Job:
    """Drop a queued job; ask a running one to stop at its next step."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise JobError(f"there is no job {job_id}")
    if job.status == JobStatus.QUEUED:
        job.status, job.finished_at = JobStatus.CANCELLED, utcnow()
    elif job.status == JobStatus.RUNNING:
        job.cancel_requested = True
    else:
        raise JobError(f"job {job_id} has already {job.status}")
    return job


def reap_stale(session: Session, lease_seconds: float, max_attempts: int = 2) -> list[int]:
    """Running jobs whose worker stopped heart-beating: re-queued once, then failed."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    stale = session.scalars(
        select(Job).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff).with_for_update(skip_locked=True)
    ).all()
    for job in stale:
        if job.attempts < max_attempts and not job.cancel_requested:
            job.status, job.worker_id, job.phase = JobStatus.QUEUED, None, None
            job.log_tail = (job.log_tail + "worker stopped responding; job re-queued\n")[-LOG_TAIL_CHARS:]
        else:
            job.status, job.finished_at = JobStatus.FAILED, utcnow()
            job.error = "the worker stopped responding (it may have crashed or lost power)"
    return [job.id for job in stale]


def latest_job(session: Session) -> Job | None:
    """The job to follow: the newest running one, else the newest queued, else the newest finished."""
    return session.scalar(
        select(Job).order_by(Job.status.notin_(ACTIVE), Job.status != JobStatus.RUNNING, Job.id.desc()).limit(1)
    )


def recent_jobs(session: Session, limit: int = 20) -> list[Job]:
    """The newest `limit` jobs, newest first."""
    return list(session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))


def active_jobs(session: Session) -> int:
    """How many jobs are queued or running."""
    return session.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE)))


def job_counts(session: Session) -> dict[str, int]:
    """`{status: number of jobs}` of every status that has a job."""
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status).order_by(Job.status)).all())

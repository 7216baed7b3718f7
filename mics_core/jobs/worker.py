"""The worker: claims queued jobs and runs them, writing progress back to the job row.

`python -m mics_core worker` on any host that sees the database and the data root (the
image store) is a worker; the app starts a local one when none is alive. A heartbeat
thread keeps the worker's and its job's heartbeat fresh even during a long step; a
worker killed outright stops heart-beating and its job is re-queued once, then failed,
by whichever worker or app next looks (`reap_stale`); its row is marked "gone" then too
(`mark_gone`).

The app's local worker is one per data root, always: `ensure_local_worker` starts it
holding a file lock that the worker process inherits and keeps for its whole life (the
operating system drops it when the process dies, even by kill -9), so a second request
while the first worker is still starting up, before it registers, starts nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mics_core.config import Settings, TrainSettings
from mics_core.db import Database, connect, init_db
from mics_core.db.models import Job, JobKind, JobStatus, Worker, utcnow
from mics_core.devices import resolve_device
from mics_core.jobs.queue import claim_next, finish, reap_stale, report_progress
from mics_core.jobs.retrain import run_prepare, run_retrain
from mics_core.store import file_lock
from mics_core.train import Cancelled, Reporter

HEARTBEAT_SECONDS = 5.0
PROGRESS_SECONDS = 1.0
# Under the data root: held by the local worker `ensure_local_worker` started, while it lives.
LOCAL_WORKER_LOCK = "worker.lock"


class JobReporter(Reporter):
    """Writes a job's progress (at most once a second) and turns a cancel request into `Cancelled`.

    Both happen in `on_step`, the callback every reporter derived from this one (`within`, for
    one part of a phase) calls too."""

    def __init__(self, db: Database, job_id: int) -> None:
        super().__init__(on_step=self._write)
        self.db, self.job_id = db, job_id
        self.phase, self.phase_started, self.last_write = "", time.monotonic(), 0.0

    def _write(self, phase: str, step: int, total: int, losses: dict[str, float]) -> None:
        now = time.monotonic()
        if phase != self.phase:
            self.phase, self.phase_started, self.last_write = phase, now, 0.0
        if now - self.last_write < PROGRESS_SECONDS and step < total:
            return
        self.last_write = now
        elapsed = now - self.phase_started
        eta = elapsed / step * (total - step) if step else None
        loss = losses.get("total")
        line = f"{phase} {step}/{total}" + (f" loss {loss:.4f}" if loss is not None else "")
        with self.db.session() as session:
            stop = report_progress(session, self.job_id, phase, step, total, loss, eta, line)
        if stop:
            raise Cancelled(f"cancelled during {phase} at step {step} of {total}")


def job_settings(params: dict, device: str, gpus: int | None = None) -> TrainSettings:
    """A job's training settings: its own choices over the environment's, except the device —
    a job may ask for the CPU, but which GPU (and how many) is the worker's to say."""
    chosen = {k: v for k, v in params.items() if TrainSettings.is_setting(k)}
    if chosen.get("device") != "cpu":
        chosen.pop("device", None)
    worker = {"device": device} | ({"gpus": gpus} if gpus else {})
    train = TrainSettings.from_env(**(worker | chosen))
    return train.replace(device=str(resolve_device(train.device)))


def run_job(
    db: Database, settings: Settings, job: Job, device: str, gpus: int | None = None
) -> tuple[str, str | None, int | None]:
    """Run one claimed job; return (status, error, model version id)."""
    try:
        # the job's own settings win over the worker's device; a bad setting fails the job, not the worker
        train = job_settings(job.params, device, gpus)
        runner = run_prepare if job.kind == JobKind.PREPARE else run_retrain
        version = runner(db, settings, train, JobReporter(db, job.id))
    except Cancelled as stop:
        return JobStatus.CANCELLED, str(stop), None
    except Exception as err:  # a job's failure is recorded on its row, never crashes the worker
        detail = "".join(traceback.format_exception_only(err)).strip()
        with db.session() as session:
            report_progress(
                session, job.id, job.phase or "failed", job.step, job.total, None, None, traceback.format_exc()[-2000:]
            )
        return JobStatus.FAILED, detail, None
    return JobStatus.SUCCEEDED, None, version


def _heartbeat(db: Database, worker_id: str, state: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        with db.session() as session:
            worker = session.get(Worker, worker_id)
            if worker is not None:  # a worker that was only stalled past its lease is alive again
                worker.heartbeat_at, worker.job_id, worker.status = utcnow(), state.get("job"), "alive"
            if state.get("job") is not None:
                job = session.get(Job, state["job"])
                if job is not None and job.status == JobStatus.RUNNING:
                    job.heartbeat_at = utcnow()


def run_worker(
    settings: Settings, device: str = "cpu", once: bool = False, poll: float = 2.0, gpus: int | None = None, log=print
) -> int:
    """Claim and run jobs until stopped (or after one job with `once`); return jobs run."""
    db = init_db(settings.db_url)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    actual = str(resolve_device(device))
    with db.session() as session:
        session.add(Worker(id=worker_id, host=socket.gethostname(), pid=os.getpid(), device=actual))
    state: dict = {}
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(db, worker_id, state, stop), daemon=True)
    beat.start()
    log(f"worker {worker_id} on {actual}, waiting for jobs")
    done = 0
    try:
        while True:
            with db.session() as session:
                for job_id in reap_stale(session, settings.lease_seconds):
                    log(f"job {job_id}: its worker stopped responding")
                for gone in mark_gone(session, settings.lease_seconds):
                    log(f"worker {gone} stopped responding; marked gone")
                job = claim_next(session, worker_id)
            if job is None:
                if once:
                    return done
                time.sleep(poll)
                continue
            state["job"] = job.id
            log(f"job {job.id} ({job.kind}) started")
            status, error, version = run_job(db, settings, job, actual, gpus)
            with db.session() as session:
                finish(session, job.id, status, error, version)
            state["job"] = None
            done += 1
            log(f"job {job.id} {status}" + (f": {error}" if error else ""))
            if once:
                return done
    finally:
        stop.set()
        with db.session() as session:
            session.execute(delete(Worker).where(Worker.id == worker_id))


def _exit_on_sigterm(_signum, _frame) -> None:
    """Leave through `finally` (the worker's row is removed); a job it was running is
    re-queued by the lease like any other abandoned job."""
    raise SystemExit(0)


def mark_gone(session: Session, lease_seconds: float) -> list[str]:
    """Mark the workers whose heartbeat is older than the lease "gone" (killed or lost
    power: a worker that stops cleanly removes its own row); return their ids."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    rows = session.scalars(
        update(Worker)
        .where(Worker.status == "alive", Worker.heartbeat_at < cutoff)
        .values(status="gone")
        .returning(Worker.id)
    )
    return list(rows)


def live_workers(db: Database, within_seconds: float = 3 * HEARTBEAT_SECONDS) -> list[Worker]:
    cutoff = utcnow() - timedelta(seconds=within_seconds)
    with db.session() as session:
        return list(session.scalars(select(Worker).where(Worker.status == "alive", Worker.heartbeat_at >= cutoff)))


def ensure_local_worker(settings: Settings, device: str = "cpu") -> int | None:
    """Start a background worker on this machine when none is alive or starting; return its
    pid (None when one was already there). The caller has created the schema (`init_db`);
    migrating here could run Alembic in two threads at once, which it does not support."""
    db = connect(settings.db_url)
    with db.session() as session:
        mark_gone(session, settings.lease_seconds)
    with file_lock(Path(settings.data_root) / LOCAL_WORKER_LOCK, wait=False) as lock:
        if lock is None or live_workers(db):  # None: the local worker holds it (it may still be starting)
            return None
        process = _start_worker(settings, device, lock)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not live_workers(db) and process.poll() is None:
        time.sleep(0.2)
    return process.pid


def _start_worker(settings: Settings, device: str, lock: int) -> subprocess.Popen:
    """The worker process, given the locked descriptor `lock` so it holds the lock while it lives."""
    log_path = Path(settings.data_root) / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    project = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "MICS_DB_URL": settings.db_url,
        "MICS_DATA_ROOT": str(Path(settings.data_root).resolve()),
        "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mics_core", "worker", "--device", device],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            pass_fds=(lock,),
        )

"""Real worker processes: the retrain chain, cancel, kill -9 and recovery, two workers, rollback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mics_core.config import Settings
from mics_core.db.models import Job, ModelVersion, Prediction
from mics_core.evaluation.demo import generate
from mics_core.ingest.importer import import_source
from mics_core.jobs.queue import cancel, claim_next, enqueue, request_retrain
from mics_core.registry import activate, active_version

ROOT = Path(__file__).resolve().parents[2]
TINY_ENV = {
    "MICS_BACKBONE": "test_resnet",
    "MICS_IMAGE_SIZE": "64",
    "MICS_PRETRAIN_EPOCHS": "1",
    "MICS_FINETUNE_STEPS": "20",
    "MICS_WEIGHTS": "none",
}


@pytest.fixture
def project(tmp_path, settings: Settings, db):
    """A tiny imported dataset with labels on half the cases."""
    manifest = generate(tmp_path / "demo", pairs=24, seed=2, size=64, workers=1)
    lines = manifest.read_text().splitlines()
    labelled = [line if i % 2 else ",".join(line.split(",")[:3]) + "," for i, line in enumerate(lines[1:])]
    manifest.write_text("\n".join([lines[0], *labelled]) + "\n")
    import_source(manifest, db, settings)
    return settings, db


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **TINY_ENV,
        "MICS_DB_URL": settings.db_url,
        "MICS_DATA_ROOT": str(settings.data_root),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def _worker(settings: Settings, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mics_core", "worker", *args],
        env=_env(settings, **extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _job(db, job_id: int) -> Job:
    with db.session() as s:
        return s.get(Job, job_id, populate_existing=True)


def _wait(predicate, timeout: float = 240, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _long_job_under_way(settings: Settings, db) -> tuple[int, subprocess.Popen]:
    """A retrain long enough to act on while it runs, and the worker running it, once it made progress."""
    with db.session() as s:
        job_id = enqueue(s, "retrain", {"pretrain_epochs": 200}).id
    worker = _worker(settings)
    _wait(lambda: _job(db, job_id).step > 0, what="the job to make progress")
    return job_id, worker


def _stop(*workers: subprocess.Popen) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


def test_retrain_chain_registers_an_active_version_with_predictions(project):
    settings, db = project
    with db.session() as s:
        job_id = request_retrain(s).id
    worker = _worker(settings, "--once")
    out, _ = worker.communicate(timeout=600)
    job = _job(db, job_id)
    assert job.status == "succeeded", out + (job.error or "") + job.log_tail
    with db.session() as s:
        version = active_version(s)
        assert version.id == job.model_version_id and version.n_labels == 12
        assert version.label_snapshot == 12 and version.class_names
        kinds = s.scalars(sa.select(ModelVersion.kind).order_by(ModelVersion.id)).all()
        assert kinds == ["encoders", "mics"]
        predictions = s.scalars(sa.select(Prediction).where(Prediction.model_version_id == version.id)).all()
        assert len(predictions) == 24 and all(p.umap_x is not None for p in predictions)
        assert all(abs(sum(p.probs) - 1) < 1e-3 and 0 <= p.uncertainty <= 1 for p in predictions)
    assert (settings.data_root / version.checkpoint_path).is_file()
    for phase in ("pretrain", "finetune", "predict", "umap"):
        assert phase in job.log_tail


def test_second_retrain_reuses_the_encoders_and_rollback_restores_the_first(project):
    settings, db = project
    for _ in range(2):
        with db.session() as s:
            enqueue(s, "retrain")
        assert _worker(settings, "--once").wait(timeout=600) == 0
    with db.session() as s:
        kinds = s.scalars(sa.select(ModelVersion.kind).order_by(ModelVersion.id)).all()
        assert kinds == ["encoders", "mics", "mics"]
        first, second = s.scalars(sa.select(ModelVersion.id).where(ModelVersion.kind == "mics")).all()
        assert active_version(s).id == second
        second_version = s.get(ModelVersion, second)
        assert second_version.parent_id == first
        activate(s, first)
    with db.session() as s:
        assert active_version(s).id == first
        count = s.scalar(sa.select(sa.func.count()).where(Prediction.model_version_id == first))
        assert count == 24  # the older version's predictions were kept


def test_cancel_mid_run_leaves_the_active_model_untouched(project):
    settings, db = project
    job_id, worker = _long_job_under_way(settings, db)
    try:
        with db.session() as s:
            cancel(s, job_id)
        _wait(lambda: _job(db, job_id).status == "cancelled", what="the job to stop")
    finally:
        _stop(worker)
    with db.session() as s:
        assert active_version(s) is None
        assert s.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 0


def test_kill_9_then_recovery_by_another_worker(project):
    settings, db = project
    job_id, victim = _long_job_under_way(settings, db)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    with db.session() as s:  # the rescue gets a normal-length retrain
        s.get(Job, job_id).params = {}
    time.sleep(4)  # let the victim's 3-second lease run out
    out, _ = _worker(settings, "--once", MICS_LEASE_SECONDS="3").communicate(timeout=600)
    job = _job(db, job_id)
    assert "stopped responding" in out and job.attempts == 2 and job.status == "succeeded", out
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).where(ModelVersion.kind == "mics")) == 1


def test_two_workers_on_postgres_never_run_the_same_job(project):
    settings, db = project
    if not settings.db_url.startswith("postgresql"):
        pytest.skip("several workers need PostgreSQL")
    with db.session() as s:
        ids = [enqueue(s, "retrain", {"finetune_epochs": 1}).id for _ in range(3)]
    workers = [_worker(settings) for _ in range(2)]
    try:
        _wait(lambda: all(_job(db, i).status == "succeeded" for i in ids), timeout=600, what="all jobs")
    finally:
        _stop(*workers)
    jobs = [_job(db, i) for i in ids]
    assert all(job.attempts == 1 for job in jobs)
    assert len({job.model_version_id for job in jobs}) == 3


def test_progress_of_part_of_a_phase_reaches_the_job_row_and_a_cancel_stops_it(settings, db):
    """Fine-tuning reports each of its rounds through `within`: the row still gets the step
    counted over the whole phase, and a cancel request still stops it."""
    from mics_core.jobs.worker import JobReporter
    from mics_core.train import Cancelled

    with db.session() as s:
        job_id = request_retrain(s).id
        claim_next(s, "w1")
    part = JobReporter(db, job_id).within(5, 10)
    part.step("finetune", 5, 5, {"total": 0.5})
    job = _job(db, job_id)
    assert (job.phase, job.step, job.total, job.loss) == ("finetune", 10, 10, 0.5)
    assert job.log_tail == "finetune 10/10 loss 0.5000\n"
    with db.session() as s:
        cancel(s, job_id)  # running: a request the next step learns of
    with pytest.raises(Cancelled, match="during finetune"):
        part.step("finetune", 5, 5, {"total": 0.4})


def test_a_job_that_cannot_run_fails_on_its_row_and_the_worker_survives(settings, db):
    """Settings in the job (device included, as the Train screen sends them) never crash the
    worker: a job that cannot run is marked failed with the reason."""
    from mics_core.jobs.worker import run_job

    with db.session() as session:
        job = request_retrain(session, {"device": "cuda", "backbone": "test_resnet", "finetune_epochs": 2})
    status, error, version = run_job(db, settings, job, "cpu")
    assert (status, version) == ("failed", None)
    assert "there are no cases to train on" in error


def test_a_job_chooses_its_settings_but_not_which_gpu():
    from mics_core.jobs.worker import job_settings

    assert job_settings({"device": "cuda", "finetune_epochs": 3}, "cpu").device == "cpu"  # a CPU worker stays on it
    assert job_settings({"device": "cpu"}, "cuda").device == "cpu"  # asking for the CPU is allowed
    chosen = job_settings({"backbone": "test_resnet", "gpus": 8, "unknown": 1}, "cpu", gpus=2)
    assert (chosen.pretrain.backbone, chosen.gpus) == ("test_resnet", 8)
    assert job_settings({}, "cpu", gpus=2).gpus == 2


def _end(pid: int, sig: int = signal.SIGTERM) -> None:
    """Stop a worker this test started through `ensure_local_worker` (its child) and reap it."""
    try:
        os.kill(pid, sig)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _worker_rows(db) -> dict[str, str]:
    from mics_core.db.models import Worker

    with db.session() as s:
        return dict(s.execute(sa.select(Worker.id, Worker.status)).all())


def test_one_local_worker_even_while_the_first_is_starting_and_a_killed_one_is_marked_gone(tmp_path, db_url):
    """Two requests at once (two sessions pressing Retrain) start one worker, even though it
    takes seconds to register; once that worker is killed with kill -9, its row is marked gone
    and the next request starts a new one."""
    import threading
    from dataclasses import replace

    from mics_core.db import init_db
    from mics_core.jobs.worker import ensure_local_worker, live_workers

    settings = Settings(db_url=db_url, data_root=tmp_path / "data", lease_seconds=6)
    db = init_db(db_url)
    barrier, pids = threading.Barrier(2), []

    def press_retrain() -> None:
        barrier.wait()
        pids.append(ensure_local_worker(settings))

    callers = [threading.Thread(target=press_retrain) for _ in range(2)]
    started = []
    try:
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=120)
        started = [pid for pid in pids if pid is not None]
        assert len(pids) == 2 and len(started) == 1, pids
        _wait(lambda: len(live_workers(db)) == 1, timeout=60, what="the worker to register")
        assert ensure_local_worker(settings) is None  # registered and holding the lock
        (first,) = live_workers(db)
        _end(started[0], signal.SIGKILL)
        time.sleep(settings.lease_seconds + 1)
        started.append(ensure_local_worker(replace(settings)))
        assert started[-1] is not None and started[-1] != started[0]
        assert _worker_rows(db)[first.id] == "gone"
        _wait(lambda: [w.pid for w in live_workers(db)] == [started[-1]], timeout=60, what="the new worker")
    finally:
        for pid in started:
            _end(pid)


def test_a_worker_marks_rows_of_workers_that_stopped_heart_beating_gone(settings, db):
    from datetime import timedelta

    from mics_core.db.models import Worker, utcnow
    from mics_core.jobs.worker import live_workers, run_worker

    with db.session() as s:
        s.add(Worker(id="killed", host="h", pid=1, device="cpu", heartbeat_at=utcnow() - timedelta(minutes=10)))
        s.add(Worker(id="busy", host="h", pid=2, device="cpu", heartbeat_at=utcnow()))
    assert run_worker(settings, once=True, log=lambda _line: None) == 0
    assert _worker_rows(db) == {"killed": "gone", "busy": "alive"}  # its own row removed on leaving
    assert [w.id for w in live_workers(db)] == ["busy"]

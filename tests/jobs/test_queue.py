"""The job table as a queue, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from mics_core.db import connect
from mics_core.db.models import Job, JobStatus, utcnow
from mics_core.jobs.queue import (
    LOG_TAIL_CHARS,
    JobError,
    active_jobs,
    cancel,
    claim_next,
    enqueue,
    finish,
    job_counts,
    latest_job,
    reap_stale,
    recent_jobs,
    report_progress,
    request_retrain,
)


def test_claims_oldest_first_and_never_twice(db):
    with db.session() as s:
        first, second = enqueue(s, "retrain").id, enqueue(s, "retrain").id
    with db.session() as s:
        job = claim_next(s, "w1")
        assert (job.id, job.status, job.worker_id, job.attempts) == (first, "running", "w1", 1)
    with db.session() as s:
        assert claim_next(s, "w2").id == second
    with db.session() as s:
        assert claim_next(s, "w3") is None


@pytest.mark.parametrize("kind", ["mine-bitcoin", "predict"])
def test_unknown_kind_is_refused(db, kind):
    """A retrain is the only job; predicting is one of its phases, not a job of its own."""
    with pytest.raises(JobError, match="unknown job kind"), db.session() as s:
        enqueue(s, kind)


def test_retrain_requests_join_the_queued_one(db):
    with db.session() as s:
        first = request_retrain(s).id
        assert request_retrain(s).id == first
    with db.session() as s:
        claim_next(s, "w1")
    with db.session() as s:
        behind = request_retrain(s).id  # one queued behind the running retrain
        assert behind != first and request_retrain(s).id == behind


def test_cancel_drops_queued_and_flags_running(db):
    with db.session() as s:
        running, queued = enqueue(s, "retrain").id, enqueue(s, "retrain").id
    with db.session() as s:
        claim_next(s, "w1")  # the older job is now running
    with db.session() as s:
        assert cancel(s, running).cancel_requested
        assert cancel(s, queued).status == "cancelled"
    with db.session() as s:
        assert report_progress(s, running, "finetune", 1, 10, 0.5, 9.0) is True  # the worker learns of it
        finish(s, running, "cancelled")
    with pytest.raises(JobError, match="already cancelled"), db.session() as s:
        cancel(s, running)
    with pytest.raises(JobError, match="no job 999"), db.session() as s:
        cancel(s, 999)


def test_progress_is_written_and_the_log_tail_is_bounded(db):
    with db.session() as s:
        job_id = enqueue(s, "retrain").id
        claim_next(s, "w1")
    for i in range(500):
        with db.session() as s:
            report_progress(s, job_id, "pretrain", i, 500, 1.0 / (i + 1), 500 - i, f"step {i} " + "x" * 20)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.phase, job.step, job.total) == ("pretrain", 499, 500)
        assert len(job.log_tail) <= LOG_TAIL_CHARS and job.log_tail.endswith("x\n")


def test_a_silent_worker_is_requeued_once_then_failed(db):
    with db.session() as s:
        job_id = enqueue(s, "retrain").id
        claim_next(s, "dead-1")
    with db.session() as s:
        assert reap_stale(s, lease_seconds=60) == []  # still within its lease
        s.get(Job, job_id).heartbeat_at = utcnow() - timedelta(minutes=5)
    with db.session() as s:
        assert reap_stale(s, lease_seconds=60) == [job_id]
        assert s.get(Job, job_id).status == "queued"
    with db.session() as s:
        assert claim_next(s, "dead-2").attempts == 2
        s.get(Job, job_id).heartbeat_at = utcnow() - timedelta(minutes=5)
    with db.session() as s:
        reap_stale(s, lease_seconds=60)
        job = s.get(Job, job_id)
        assert job.status == "failed" and "stopped responding" in job.error


def test_the_job_to_follow_is_the_running_one_then_the_queued_one_then_the_last(db):
    with db.session() as s:
        assert latest_job(s) is None
        first, second = enqueue(s, "retrain").id, enqueue(s, "retrain").id
        assert latest_job(s).id == second  # both queued: the newest
        claim_next(s, "w1")
        assert latest_job(s).id == first  # running beats queued
        finish(s, first, JobStatus.SUCCEEDED)
        assert latest_job(s).id == second
        cancel(s, second)
        assert latest_job(s).id == second  # nothing active: the newest finished


def test_job_listings_and_counts(db):
    with db.session() as s:
        assert recent_jobs(s) == [] and active_jobs(s) == 0 and job_counts(s) == {}
        ids = [enqueue(s, "retrain").id for _ in range(4)]
        claim_next(s, "w1")
        finish(s, ids[0], JobStatus.FAILED)
        claim_next(s, "w1")
        cancel(s, ids[3])
        assert [job.id for job in recent_jobs(s, limit=3)] == ids[:0:-1]  # newest first
        assert active_jobs(s) == 2  # one running, one queued
        assert job_counts(s) == {"cancelled": 1, "failed": 1, "queued": 1, "running": 1}


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_never_share_a_job(db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite supports one worker; this is the multi-worker guarantee")
    from mics_core.db import init_db

    db = init_db(db_url)
    with db.session() as s:
        ids = {enqueue(s, "retrain").id for _ in range(60)}
    claimed: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    def claim_all(name: str) -> None:
        database = connect(db_url)
        while True:
            with database.session() as s:
                job = claim_next(s, name)
                if job is None:
                    return
                claimed[name].append(job.id)

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for got in claimed.values() for i in got]
    assert sorted(everything) == sorted(ids)  # each job exactly once
    assert sum(1 for got in claimed.values() if got) >= 2  # and the work really was shared


def test_a_retrain_is_claimed_before_an_older_prepare_job(db):
    from mics_core.jobs.queue import claim_next, enqueue, request_prepare

    with db.session() as session:
        prepare = request_prepare(session).id
        assert request_prepare(session).id == prepare  # at most one queued
        retrain = enqueue(session, "retrain").id
    with db.session() as session:
        assert claim_next(session, "w1").id == retrain
        assert claim_next(session, "w1").id == prepare

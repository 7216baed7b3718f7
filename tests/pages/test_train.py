"""The Train screen: Retrain queues one job, progress shows from the job row, cancel, roll back."""

from __future__ import annotations

import socket

from sqlalchemy import select

from mics_core.db.models import Job, ModelVersion, Worker, utcnow
from mics_core.jobs.queue import claim_next, report_progress
from tests.conftest import add_model, make_project
from tests.pages.conftest import button


def _live_worker(db, device: str = "cpu") -> None:
    """A worker row with a fresh heartbeat, so the page does not start a real worker process."""
    with db.session() as session:
        session.add(Worker(id="w1", host=socket.gethostname(), pid=1, device=device, heartbeat_at=utcnow()))


def test_retrain_queues_one_job_with_the_chosen_settings(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path)
    _live_worker(db)
    app = open_page("pages/train.py", role="annotator")
    assert "CPU worker is connected" in app.info[0].value
    app.number_input[1].set_value(30)
    button(app, "Retrain").click().run()
    button(app, "Retrain").click().run()  # a second press joins the queued job
    assert not app.exception
    with db.session() as session:
        jobs = session.scalars(select(Job).where(Job.kind == "retrain")).all()  # besides the import's prepare job
    assert len(jobs) == 1 and jobs[0].params["finetune_steps"] == 30
    assert jobs[0].requested_by == app.session_state["user"].id


def test_a_gpu_worker_is_shown_as_connected(open_page, db):
    _live_worker(db, "cuda:0")
    app = open_page("pages/train.py")
    assert "GPU worker connected" in app.success[0].value


def test_running_job_shows_progress_loss_curve_and_can_be_cancelled(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path)
    _live_worker(db)
    with db.session() as session:
        session.add(Job(kind="retrain"))
    with db.session() as session:
        job = claim_next(session, "w1")
        for step in (1, 2, 3):
            report_progress(session, job.id, "finetune", step, 10, 1.0 / step, 42.0)
    app = open_page("pages/train.py")
    assert "Fine-tuning 3/10" in app.get("progress")[0].proto.text
    assert "42 s left" in app.get("progress")[0].proto.text
    assert len(app.get("plotly_chart")) == 1
    button(app, "Cancel this job").click().run()
    with db.session() as session:
        assert session.get(Job, job.id).cancel_requested


def test_only_an_admin_can_roll_back_to_an_older_version(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path)
    first = add_model(db, [[0.6, 0.3, 0.1]] * 12, [0.5] * 12)
    add_model(db, [[0.1, 0.3, 0.6]] * 12, [0.2] * 12)
    annotator = open_page("pages/train.py", role="annotator")
    assert not any(b.label.startswith("Make this version active") for b in annotator.button)
    app = open_page("pages/train.py")
    assert len(app.dataframe[0].value) == 2
    app.selectbox[-1].select(first).run()
    button(app, "Make this version active (roll back)").click().run()
    with db.session() as session:
        assert session.scalar(select(ModelVersion.id).where(ModelVersion.active)) == first

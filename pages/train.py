"""Train: one Retrain button, the running job's live progress, and the model versions.

The page never trains: it writes a job row and, on a single machine, starts a local
worker when none is alive. Progress is read back from the job row by a fragment that
refreshes itself every two seconds while a job is active.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import ui as _ui
from mics_core.config import TrainSettings
from mics_core.db.models import Job
from mics_core.jobs.queue import ACTIVE, PHASES, cancel, latest_job, recent_jobs, request_retrain
from mics_core.jobs.worker import ensure_local_worker, live_workers
from mics_core.model.backbones import SUPPORTED
from mics_core.registry import activate, version_table, versions

me = _ui.require("train")
defaults = TrainSettings.from_env()

st.title("Train")

workers = live_workers(_ui.database())
gpus = [w for w in workers if w.device.startswith("cuda")]
if gpus:
    st.success(f"GPU worker connected: {', '.join(f'{w.host} ({w.device})' for w in gpus)}.")
elif workers:
    st.info(f"A CPU worker is connected ({workers[0].host}); no GPU worker. Training runs on the CPU.")
else:
    st.info("No worker is running. Pressing Retrain starts one on this machine.")

with st.expander("Training settings"):
    left, right = st.columns(2)
    stage1 = defaults.pretrain
    options = list(dict.fromkeys([stage1.backbone, *SUPPORTED]))
    backbone = left.selectbox(
        "Backbone (timm)", options, format_func=lambda name: f"{name} — {SUPPORTED.get(name, 'from the settings')}"
    )
    sizes = sorted({64, 96, 128, 160, 192, 224, stage1.image_size})
    image_size = left.select_slider("Image size (pixels)", sizes, value=stage1.image_size)
    device = left.selectbox("Device", ["cuda", "cpu"], help="cuda falls back to the CPU on a worker without a GPU.")
    pretrain_epochs = right.number_input(
        "Pre-training epochs", 0, 1000, stage1.epochs, help="0: the encoders' own weights (ImageNet by default)"
    )
    finetune_steps = right.number_input("Fine-tuning steps per model", 10, 10000, defaults.finetune.steps)
    st.caption(
        "Pre-training runs again only when its settings (backbone, image size, epochs) changed "
        "or many new cases were added; fine-tuning settings never cost a pre-training."
    )
params = {
    "backbone": backbone,
    "image_size": int(image_size),
    "device": device,
    "pretrain_epochs": int(pretrain_epochs),
    "finetune_steps": int(finetune_steps),
}

if st.button("Retrain", type="primary", icon=":material/model_training:"):
    with _ui.session() as session:
        job = request_retrain(session, params, user_id=me.id)
        job_id, joined = job.id, job.params != params
    if not workers:
        with st.spinner("Starting a worker on this machine…"):
            ensure_local_worker(_ui.settings(), device)
    st.toast(
        f"A retrain was already queued (job {job_id}); it will train on your labels too, with its own settings."
        if joined
        else f"Retrain job {job_id} is queued."
    )


def eta_text(seconds: float | None) -> str:
    if not seconds:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f" · about {minutes} min {secs} s left" if minutes else f" · about {secs} s left"


def show_job(job: Job) -> None:
    phase = PHASES.get(job.phase or "", job.phase or "waiting for a worker").capitalize()
    fraction = job.step / job.total if job.total else 0.0
    st.progress(
        min(fraction, 1.0),
        text=f"Job {job.id} ({job.kind}) · {job.status} · {phase} {job.step}/{job.total}{eta_text(job.eta_seconds)}",
    )
    if job.curve:
        curve = pd.DataFrame(job.curve, columns=["phase", "step", "loss"]).reset_index(names="update")
        chart = px.line(curve, x="update", y="loss", color="phase", height=260)
        chart.update_layout(margin={"l": 0, "r": 0, "t": 10, "b": 0})
        st.plotly_chart(chart, key=f"curve_{job.id}")
    stop = job.status in ACTIVE and st.button("Cancel this job", key=f"cancel_{job.id}", icon=":material/cancel:")
    if stop and _ui.attempt(lambda session: cancel(session, job.id)):
        st.rerun()
    if job.error:
        st.error(f"The job did not finish: {job.error}")


def followed_job() -> Job | None:
    with _ui.session() as session:
        return latest_job(session)


job = followed_job()


@st.fragment(run_every=2 if job is not None and job.status in ACTIVE else None)
def progress() -> None:
    current = followed_job()
    if current is None:
        st.caption("No training job yet.")
        return
    st.subheader("Current job" if current.status in ACTIVE else "Last job")
    show_job(current)
    if job is not None and job.status in ACTIVE and current.status not in ACTIVE:
        st.rerun()  # the job ended: redraw the whole page (versions, sidebar)


progress()

st.subheader("Model versions")
with _ui.session() as session:
    table = version_table(versions(session)[::-1])
if table.empty:
    st.caption("No model yet. Label a few cases of every class, then press Retrain.")
else:
    shown = ["version", "active", "created", "labels", "accuracy", "macro-F1", "ECE", "backbone"]
    st.dataframe(table[shown], hide_index=True, width="stretch")
    if me.role == "admin":
        left, right = st.columns([1, 3])
        chosen = left.selectbox("Version", list(table["version"]), label_visibility="collapsed")
        if right.button("Make this version active (roll back)") and _ui.attempt(
            lambda session: activate(session, chosen)
        ):
            st.success(f"Version {chosen} is active; its predictions are shown everywhere.")
            st.rerun()

with st.expander("Job history"):
    with _ui.session() as session:
        jobs = recent_jobs(session)
        table = pd.DataFrame(
            [
                {
                    "job": j.id,
                    "status": j.status,
                    "phase": j.phase,
                    "created": j.created_at,
                    "finished": j.finished_at,
                    "model version": j.model_version_id,
                    "error": j.error,
                }
                for j in jobs
            ]
        )
    st.dataframe(table, hide_index=True, width="stretch")

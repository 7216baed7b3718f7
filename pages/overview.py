"""Overview: what the project holds, one page of cases at a time."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui as _ui
from mics_core.auth import allowed
from mics_core.browse import case_table
from mics_core.db.models import JobKind
from mics_core.jobs.queue import ACTIVE, PHASES, latest_job
from mics_core.setup import ensure_database, holds_demo_data
from mics_core.stats import dataset_stats

PAGE_SIZE = 50

me = _ui.require("overview")
st.title("Overview")
with _ui.session() as session:
    stats = dataset_stats(session)
    synthetic = holds_demo_data(session)

if synthetic:
    st.info("This project holds **synthetic demo data**: rendered images, not real patients.")

if not stats.cases:
    st.info("No cases yet — import a folder or use the demo data.")
    if allowed(me.role, "import"):
        pairs = _ui.settings().demo_pairs
        if st.button(f"Load the demo data ({pairs} synthetic pairs)", type="primary"):
            with st.spinner("Generating and importing the demo data…"):
                message = ensure_database(_ui.settings(), demo_pairs=pairs)
            st.success(message)
            st.rerun()
        st.page_link("pages/import.py", label="Import your own images", icon=":material/upload:")
    st.stop()

left, middle, right = st.columns(3)
left.metric("Cases", f"{stats.cases:,}")
middle.metric("Labelled", f"{stats.labelled:,}", f"{stats.labelled / stats.cases:.1%} of cases", delta_color="off")
right.metric("NBI computed from WLI", f"{stats.with_computed_nbi:,}")
with _ui.session() as session:
    job = latest_job(session)
if job is not None and job.kind == JobKind.PREPARE and job.status in ACTIVE:
    step = f"{PHASES.get(job.phase or '', 'waiting for a worker')} {job.step}/{job.total}" if job.total else ""
    st.progress(
        job.step / job.total if job.total else 0.0,
        text=f"Preparing the cases for training in the background (job {job.id}): {step or 'queued'}",
    )
if stats.per_class:
    counts = pd.DataFrame({"class": list(stats.per_class), "labelled cases": list(stats.per_class.values())})
    st.bar_chart(counts, x="class", y="labelled cases", horizontal=True, height=200)

pages = max(1, -(-stats.cases // PAGE_SIZE))
page = st.number_input("Page", min_value=1, max_value=pages, value=1, step=1)
with _ui.session() as session:
    table = case_table(session, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
st.caption(f"Cases {(page - 1) * PAGE_SIZE + 1}–{(page - 1) * PAGE_SIZE + len(table)} of {stats.cases:,}")
st.dataframe(table, hide_index=True, width="stretch")

"""Export: the labels (one row per case) or the full annotation history, as CSV."""

from __future__ import annotations

import streamlit as st

import ui as _ui
from mics_core.export import cases_frame, filter_frame, history_frame, to_csv_bytes

_ui.require("export")
PREVIEW_ROWS = 100

st.title("Export")
kind = st.radio(
    "What to export",
    ["Current labels (one row per case)", "Full history (every annotation)"],
    horizontal=True,
)
history = kind.startswith("Full")
with _ui.session() as session:
    frame = history_frame(session) if history else cases_frame(session)
if frame.empty:
    st.info("Nothing to export yet — import cases and label some first.")
    st.stop()

user_column = "user" if history else "labelled_by"
left, middle, right = st.columns(3)
labels = left.multiselect("Classes", sorted(frame["label"].dropna().unique()), placeholder="all")
users = middle.multiselect("Annotators", sorted(frame[user_column].dropna().unique()), placeholder="all")
dates = right.date_input("Labelled between", value=(), help="Leave empty for all dates (UTC).")
start, end = (*dates, None, None)[:2] if isinstance(dates, tuple) else (dates, dates)
filtered = filter_frame(frame, labels or None, users or None, start, end)

st.caption(f"{len(filtered):,} row(s) match; the preview shows the first {min(PREVIEW_ROWS, len(filtered))}.")
st.dataframe(filtered.head(PREVIEW_ROWS), hide_index=True, width="stretch")
st.download_button(
    "Download CSV",
    data=to_csv_bytes(filtered),
    file_name="mics-label-history.csv" if history else "mics-labels.csv",
    mime="text/csv",
    type="primary",
    icon=":material/download:",
    disabled=filtered.empty,
)

"""Explore: the UMAP view of the active model's fused features (computed by the retrain job).

Select points with a click, a box or a lasso to see those cases and send them to the Label
or Review queue. Thumbnails are loaded for the selection only.
"""

from __future__ import annotations

import plotly.express as px
import streamlit as st

import ui as _ui
from mics_core.auth import allowed
from mics_core.browse import case_view
from mics_core.embed import previous_version, projection_frame
from mics_core.registry import active_version

me = _ui.require("explore")
state = st.session_state
COLOURS = {
    "current label": "label",
    "predicted class": "predicted",
    "uncertainty": "uncertainty",
    "modality conflict": "conflict",
    "import batch": "import batch",
}
THUMBNAILS = 24

st.title("Explore")
with _ui.session() as session:
    version = active_version(session)
    before = previous_version(session, version.id) if version else None
    frame = projection_frame(session, version.id) if version else None
    old = projection_frame(session, before.id) if before else None
if frame is None or frame.empty:
    st.info("No feature map yet: it appears after the first retrain (Train screen).")
    st.stop()

left, right = st.columns([2, 1])
colour = COLOURS[left.selectbox("Colour by", list(COLOURS))]
compare = right.toggle("Show the previous version beside it", disabled=old is None or old.empty)


def scatter(data, title: str):
    continuous = colour in ("uncertainty", "conflict")
    chart = px.scatter(
        data,
        x="x",
        y="y",
        color=colour,
        symbol="labelled",
        symbol_map={"labelled": "circle", "unlabelled": "circle-open"},
        hover_name="case_key",
        hover_data={"label": True, "predicted": True, "probability": ":.2f", "x": False, "y": False},
        custom_data=["case_id"],
        color_continuous_scale="Viridis" if continuous else None,
        render_mode="webgl",
        title=title,
        height=560,
    )
    chart.update_traces(marker={"size": 6})
    # dragging selects (box); lasso, zoom and pan stay one click away in the chart's toolbar
    chart.update_layout(
        margin={"l": 0, "r": 0, "t": 40, "b": 0}, xaxis_visible=False, yaxis_visible=False, dragmode="select"
    )
    return chart


if compare:
    now_col, then_col = st.columns(2)
    with then_col:
        st.plotly_chart(scatter(old, f"Previous: version {before.id} ({before.n_labels} labels)"), key="old")
    target = now_col
else:
    target = st.container()
with target:
    event = st.plotly_chart(
        scatter(frame, f"Active: version {version.id} ({version.n_labels} labels)"),
        key="umap",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
    )

points = event.selection.points if event and event.selection else []
selected = sorted({int(p["customdata"][0]) for p in points if p.get("customdata")})
if not selected:
    st.caption(f"{len(frame):,} cases. Click, box- or lasso-select points to see them here.")
    st.stop()

st.subheader(f"{len(selected)} case(s) selected")
send_label, send_review, _ = st.columns([1, 1, 2])
if send_label.button("Send to the Label queue", type="primary", icon=":material/label:"):
    state["label_selection"] = selected
    st.switch_page("pages/label.py")
if allowed(me.role, "review") and send_review.button("Send to the Review queue", icon=":material/fact_check:"):
    state["review_selection"] = selected
    st.switch_page("pages/review.py")

tiles = st.columns(6)
with _ui.session() as session:
    views = [case_view(session, _ui.store(), case_id) for case_id in selected[:THUMBNAILS]]
for index, view in enumerate(views):
    with tiles[index % len(tiles)]:
        if view.wli is not None:
            st.image(_ui.image_png(str(view.wli), size=160), width="stretch")
        st.caption(f"{view.case_key} · {view.label or 'unlabelled'} · model: {view.predicted or '–'}")
if len(selected) > THUMBNAILS:
    st.caption(f"Showing the first {THUMBNAILS} of {len(selected)}.")

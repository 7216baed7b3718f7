"""Review: the active model's predictions, most useful first; accept with A, correct with 1–9.

Every verdict is a new annotation (`review-accept` or `review-correct`) that records that
the suggestion was shown. The counter at the bottom shows how often predictions in each
uncertainty band were corrected: if uncertainty means something, it rises band to band.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import ui as _ui
from mics_core.browse import case_view
from mics_core.labels import class_names
from mics_core.registry import active_version
from mics_core.review import (
    COLD_START_STRATEGY,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Filters,
    ReviewError,
    corrections_by_uncertainty,
    nearest_labelled,
    prediction,
    rank,
)
from mics_core.review import record_review as record

me = _ui.require("review")
state = st.session_state
PAGE = 50

st.title("Review")
with _ui.session() as session:
    classes = class_names(session)
    version = active_version(session)
    version_id = version.id if version else None

selection = _ui.explore_selection(
    "review_selection", "Reviewing the {n} case(s) selected in Explore.", "Back to the ranked queue"
)

left, middle, right = st.columns(3)
names = list(STRATEGIES)
default = names.index(DEFAULT_STRATEGY if version else COLD_START_STRATEGY)
strategy = left.selectbox("Rank by", names, index=default, key="review_strategy")
left.caption(STRATEGIES[strategy].description.capitalize() + ".")
show = middle.selectbox(
    "Show", ["all cases", "unlabelled only", "label ≠ prediction (possible label errors)"], key="review_show"
)
predicted_class = right.selectbox("Predicted class", [None, *classes], format_func=lambda c: c or "any")
threshold = st.slider("Only uncertainty at least", 0.0, 1.0, 0.0, 0.05, key="review_threshold")
filters = Filters(
    unlabelled_only=show == "unlabelled only",
    label_disagrees=show.startswith("label"),
    predicted_class=predicted_class,
    min_uncertainty=threshold or None,
    case_ids=tuple(selection) if selection else None,
)
if version is None:
    st.caption("No model yet: the diversity strategy picks typical, varied cases to label first.")

# ranked again whenever the filters or the active model change (a retrain or a rollback meanwhile)
wanted = (strategy, filters, version_id)
if state.get("review_key") != wanted:
    try:
        with st.spinner("Ranking…"), _ui.session() as session:
            limit = len(selection) if selection else PAGE
            items = rank(session, strategy, limit, filters, store=_ui.store())
    except ReviewError as err:
        st.warning(str(err).capitalize() + ".")
        st.stop()
    state["review_items"], state["review_key"], state["review_pos"] = items, wanted, 0
items = state["review_items"]
if not items:
    st.info("No cases match these filters.")
    st.stop()
if state.get("review_pos", 0) >= len(items):
    st.success(f"You reached the end of this queue ({len(items)} cases).")
    if st.button("Rank again with the newest labels", type="primary"):
        state.pop("review_key", None)
        st.rerun()
    st.stop()
item = items[state["review_pos"]]


def verdict(label: str) -> None:
    with _ui.session() as session:
        record(session, item.case_id, label, item.predicted, me.id, version_id)
    state["review_flash"] = "Accepted." if label == item.predicted else f"Corrected to {label}."
    state["review_pos"] += 1


def skip() -> None:
    state["review_pos"] += 1


with _ui.session() as session:
    case = case_view(session, _ui.store(), item.case_id)
    neighbours = nearest_labelled(session, item.case_id)
    shown = prediction(session, version_id, item.case_id) if version_id else None
if flash := state.pop("review_flash", None):
    st.toast(flash)

st.subheader(f"Case {case.case_key}")
st.caption(
    f"{state['review_pos'] + 1} of {len(items)} · score {item.score:.3f} · current label: {case.label or 'none'}"
)
views = st.columns([2, 2, 3])
for column, title, path, computed in (
    (views[0], "WLI", case.wli, False),
    (views[1], "NBI", case.nbi, case.nbi_computed),
):
    if path is not None:
        column.image(_ui.image_png(str(path)), caption=f"{title} (computed)" if computed else title, width="stretch")

with views[2]:
    if shown is not None and item.predicted is not None:
        probs = list(shown.probs)
        details = (shown.uncertainty, shown.uncertainty_wli, shown.uncertainty_nbi, shown.conflict)
        st.markdown(f"Model suggests **{item.predicted}** · calibrated probability **{item.probability:.0%}**")
        chart = px.bar(x=probs, y=version.class_names[: len(probs)], orientation="h", range_x=[0, 1], height=200)
        chart.update_layout(margin={"l": 0, "r": 0, "t": 0, "b": 0}, xaxis_title="probability", yaxis_title=None)
        st.plotly_chart(chart, key="probs")
        st.caption(
            f"Uncertainty: fused {details[0]:.2f} · WLI {details[1]:.2f} · NBI {details[2]:.2f} · "
            f"modality conflict {details[3]:.2f}"
        )
    if neighbours:
        st.caption(
            "Nearest labelled cases: " + ", ".join(f"{n.case_key} ({n.label}, {n.similarity:.2f})" for n in neighbours)
        )

buttons = st.columns(len(classes) + 2)
if item.predicted is not None:
    buttons[0].button(
        f"Accept {item.predicted}",
        shortcut="A",
        type="primary",
        on_click=verdict,
        args=(item.predicted,),
        width="stretch",
    )
for index, name in enumerate(classes):
    buttons[index + 1].button(
        name,
        key=f"review_class_{index}",
        shortcut=str(index + 1) if index < 9 else None,
        on_click=verdict,
        args=(name,),
        width="stretch",
    )
buttons[-1].button("Skip", shortcut="S", on_click=skip, width="stretch")

st.divider()
with _ui.session() as session:
    bands = corrections_by_uncertainty(session)
table = pd.DataFrame(
    [
        {
            "uncertainty": f"{b.low:.2f}–{b.high:.2f}",
            "reviewed": b.reviewed,
            "corrected": b.corrected,
            "corrected share": f"{b.corrected / b.reviewed:.0%}" if b.reviewed else "–",
        }
        for b in bands
    ]
)
st.write("**Reviewed predictions corrected, by uncertainty band**")
st.dataframe(table, hide_index=True, width="stretch")

"""Label: one case at a time, both views side by side, one key per class.

Keys: 1–9 label with a class (and go to the next case), → / ← next and previous,
U undoes the last label, S skips. Undo appends a new annotation; nothing is deleted.
"""

from __future__ import annotations

import streamlit as st

import ui as _ui
from mics_core.browse import ORDERS, BrowseError, batches, case_order, case_view
from mics_core.labels import LabelError, annotate, class_names, undo_annotation
from mics_core.stats import dataset_stats

me = _ui.require("label")
state = st.session_state

with _ui.session() as session:
    classes = class_names(session)
    stats = dataset_stats(session)
    batch_options = batches(session)

st.title("Label")
if not stats.cases:
    st.info("No cases yet — import a folder or use the demo data (see Overview).")
    st.stop()
if not classes:
    st.warning("The class list is empty. An administrator adds classes under **Admin**.")
    st.stop()

st.progress(stats.labelled / stats.cases, text=f"{stats.labelled:,} of {stats.cases:,} cases labelled")
st.caption(" · ".join(f"{name}: {count}" for name, count in stats.per_class.items()))

left, middle, right = st.columns([2, 2, 1])
order = left.selectbox("Show", ORDERS, key="label_order_kind")
class_filter = batch_filter = None
if order == "by class":
    class_filter = middle.selectbox("Class", classes, key="label_class_filter")
elif order == "by batch":
    batch_filter = middle.selectbox(
        "Import batch", [b for b, _ in batch_options], format_func=dict(batch_options).get, key="label_batch_filter"
    )
zoom = right.segmented_control("Zoom", [1, 2, 4], default=1, format_func=lambda z: f"{z}×", key="label_zoom") or 1

selection = _ui.explore_selection(
    "label_selection", "Showing the {n} case(s) selected in Explore.", "Back to all cases"
)

# The order is fixed when the filter changes, so labelling a case does not reshuffle the queue.
wanted = (order, class_filter, batch_filter, tuple(selection or ()))
if state.get("label_queue_key") != wanted:
    with _ui.session() as session:
        try:
            queue = (
                list(selection)
                if selection
                else case_order(session, order, class_name=class_filter, batch_id=batch_filter)
            )
        except BrowseError as err:
            st.error(str(err))
            st.stop()
    state["label_queue"], state["label_queue_key"], state["label_pos"] = queue, wanted, 0
    state.pop("label_last", None)
queue: list[int] = state["label_queue"]
if not queue:
    st.info("No cases match this choice.")
    st.stop()
state["label_pos"] = min(state.get("label_pos", 0), len(queue) - 1)


def move(step: int) -> None:
    state["label_pos"] = max(0, min(len(queue) - 1, state["label_pos"] + step))


def give_label(case_id: int, name: str) -> None:
    note = state.get(f"note_{case_id}") or None
    with _ui.session() as session:
        row = annotate(session, case_id, name, source="manual", user_id=me.id, note=note)
        state["label_last"] = (row.id, case_id)
    state["label_flash"] = f"Labelled {name}."
    move(1)


def undo_last() -> None:
    """Undo the last label given on this screen in this session (and only that one)."""
    last = state.pop("label_last", None)
    if last is None:
        state["label_flash"] = "Nothing to undo: no label was given here since the queue was opened."
        return
    annotation_id, case_id = last
    try:
        with _ui.session() as session:
            undo_annotation(session, annotation_id, user_id=me.id)
    except LabelError as err:
        state["label_flash"] = f"Not undone: {err}."
        return
    if case_id in queue:
        state["label_pos"] = queue.index(case_id)
    state["label_flash"] = "Undone: the previous label is restored."


case_id = queue[state["label_pos"]]
with _ui.session() as session:
    case = case_view(session, _ui.store(), case_id)

flash = state.pop("label_flash", None)
if flash:
    st.toast(flash)

st.subheader(f"Case {case.case_key}")
status = f"**{case.label}**" if case.label else "not labelled yet"
suggestion = f" · model suggests {case.predicted} ({case.probability:.0%})" if case.predicted else ""
st.caption(f"{state['label_pos'] + 1} of {len(queue)} · current label: {status}{suggestion}")

views = st.columns(2)
for column, title, path, computed in (
    (views[0], "White light (WLI)", case.wli, False),
    (views[1], "Narrow band (NBI)", case.nbi, case.nbi_computed),
):
    with column:
        if path is None:
            st.info(f"No {title} image: the model uses the other view.")
            continue
        caption = f"{title} — computed from WLI, not a real NBI image" if computed else title
        # the stored file itself at 1× (no re-encoding: instant), a cached centre crop when zoomed
        st.image(str(path) if zoom == 1 else _ui.image_png(str(path), zoom), caption=caption, width="stretch")

buttons = st.columns(min(len(classes), 9))
for index, name in enumerate(classes):
    shortcut = str(index + 1) if index < 9 else None
    buttons[index % len(buttons)].button(
        name,
        key=f"class_{index}",
        shortcut=shortcut,
        type="primary" if name == case.label else "secondary",
        on_click=give_label,
        args=(case.id, name),
        width="stretch",
    )

st.text_input("Note (saved with the label)", key=f"note_{case.id}", placeholder="optional")

nav = st.columns(4)
nav[0].button("Previous", icon=":material/arrow_back:", shortcut="Left", on_click=move, args=(-1,), width="stretch")
nav[1].button("Skip", shortcut="S", on_click=move, args=(1,), width="stretch")
nav[2].button("Undo", icon=":material/undo:", shortcut="U", on_click=undo_last, width="stretch")
nav[3].button("Next", icon=":material/arrow_forward:", shortcut="Right", on_click=move, args=(1,), width="stretch")

if case.history:
    with st.expander(f"History of this case ({len(case.history)} entries)"):
        st.dataframe(
            [
                {"when": h.at, "label": h.label or "(cleared)", "by": h.user, "how": h.source, "note": h.note}
                for h in case.history
            ],
            hide_index=True,
            width="stretch",
        )

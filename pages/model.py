"""Model quality: held-out metrics of every version, and how far to trust the chosen one."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import ui as _ui
from mics_core.metrics import held_out_report
from mics_core.registry import trained_with, version_table, versions

_ui.require("model")


def figure(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "n/a"


st.title("Model quality")
with _ui.session() as session:
    all_versions = versions(session)
if not all_versions:
    st.info("No model yet: label some cases and press Retrain on the Train screen.")
    st.stop()

table = version_table(all_versions)
st.dataframe(table.drop(columns=["created", "backbone"]).iloc[::-1], hide_index=True, width="stretch")

if table["accuracy"].notna().sum() > 1:
    curve = px.line(table.dropna(subset=["accuracy"]), x="labels", y=["accuracy", "macro-F1"], markers=True, height=280)
    curve.update_layout(title="Learning curve: held-out metrics against labels used", yaxis_range=[0, 1])
    st.plotly_chart(curve, key="learning_curve")

chosen = st.selectbox(
    "Version", [v.id for v in reversed(all_versions)], format_func=lambda i: f"version {i}", key="quality_version"
)
version = next(v for v in all_versions if v.id == chosen)
held_out = version.metrics.get("held_out")
if not held_out:
    st.info("This version has too few held-out labelled cases for the plots (at least 4 are needed).")
    st.stop()
report = held_out_report(held_out, version.class_names)

left, right = st.columns(2)
with left:
    recall = pd.Series(version.metrics.get("per_class_recall", {}), name="recall")
    st.plotly_chart(
        px.bar(recall, orientation="h", range_x=[0, 1], height=260, title="Recall per class").update_layout(
            showlegend=False, yaxis_title=None
        ),
        key="recall",
    )
    confusion = px.imshow(
        report["confusion"], text_auto=True, color_continuous_scale="Blues", height=320, title="Confusion matrix"
    )
    confusion.update_layout(xaxis_title="predicted", yaxis_title="true label")
    st.plotly_chart(confusion, key="confusion")
with right:
    bins = report["reliability"]
    diagram = px.scatter(
        bins, x="confidence", y="accuracy", color="scaling", size="share", height=300, range_x=[0, 1], range_y=[0, 1]
    )
    diagram.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="perfect"))
    before, after = (figure(version.metrics.get(k)) for k in ("ece_before_scaling", "ece"))
    diagram.update_layout(title=f"Reliability · ECE {before} before, {after} after temperature scaling")
    st.plotly_chart(diagram, key="reliability")
    risk = px.line(report["risk_coverage"], x="coverage", y="risk", height=280, range_y=[0, 1])
    risk.update_layout(title=f"Risk against coverage (AURC {figure(version.metrics.get('aurc'))})")
    st.plotly_chart(risk, key="risk_coverage")
settings = trained_with(version)
refit = settings is not None and settings.finetune.refit
then = "; the version's model then trained again on every label, these included" if refit else ""
st.caption(
    f"Held-out: {version.metrics.get('n')} labelled cases kept out of a first training to fit the temperature and "
    f"measure{then}. Small held-out sets give noisy figures."
)

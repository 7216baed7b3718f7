"""Model quality: out-of-fold metrics of every version, the project's label-efficiency history,
the head each version chose, and how far to trust the chosen one."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import ui as _ui
from mics_core.metrics import held_out_report
from mics_core.registry import version_table, versions

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
    curve.update_layout(title="Label efficiency: out-of-fold accuracy against labels, per version", yaxis_range=[0, 1])
    st.plotly_chart(curve, key="learning_curve")

chosen = st.selectbox(
    "Version", [v.id for v in reversed(all_versions)], format_func=lambda i: f"version {i}", key="quality_version"
)
version = next(v for v in all_versions if v.id == chosen)
held_out = version.metrics.get("held_out")
if not held_out:
    st.info("This version had too few labels to hold any out (a class needs two), so it has no figures yet.")
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
    interval = version.metrics.get("ece_interval") or [None, None]
    spread = f" (90 % interval {figure(interval[0])}–{figure(interval[1])})" if None not in interval else ""
    diagram.update_layout(title=f"Reliability · ECE {before} before, {after}{spread} after temperature scaling")
    st.plotly_chart(diagram, key="reliability")
    risk = px.line(report["risk_coverage"], x="coverage", y="risk", height=280, range_y=[0, 1])
    risk.update_layout(title=f"Risk against coverage (AURC {figure(version.metrics.get('aurc'))})")
    st.plotly_chart(risk, key="risk_coverage")
folds, head = version.metrics.get("folds"), version.metrics.get("head", "n/a")
losses = version.metrics.get("head_log_loss") or {}
tried = ", ".join(f"{'linear' if h == '0' else f'{h} hidden'}: {loss:.3f}" for h, loss in losses.items())
st.caption(
    f"Out-of-fold: each of the {version.metrics.get('n')} labelled cases was predicted by a model trained without "
    f"it ({folds} folds), and the temperature was fitted on those predictions, so the ECE after scaling flatters. "
    f"Head: {head}" + (f", chosen by out-of-fold log-loss ({tried})" if tried else "") + ". "
    "The version predicts with the fold models averaged. Few labels give noisy figures."
)

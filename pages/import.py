"""Import: a zip upload, or a folder / manifest CSV on the server; then the import report.

Every bad item is skipped with a reason and the rest imports; a source that cannot be
read at all imports nothing and says why.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

import ui as _ui
from mics_core.ingest.importer import ImportReport, import_source
from mics_core.ingest.sources import SourceError

me = _ui.require("import")
settings = _ui.settings()

st.title("Import")
st.write(
    "Cases are pairs of a white-light (WLI) and a narrow-band (NBI) image of the same lesion. Accepted: "
    "a manifest CSV (`case_id, wli_path, nbi_path[, label, split]`), a folder with `WLI/` and `NBI/` "
    "subfolders (optionally one subfolder per class), the `<class>_WLI/ <class>_NBI/` layout, or a zip of any "
    "of these. A case without NBI gets a computed NBI-like view."
)


def run_import(source: Path, name: str, use_labels: bool) -> None:
    try:
        with st.spinner("Checking and importing the images…"):
            report = import_source(
                source, _ui.database(), settings, use_labels=use_labels, user_id=me.id, display_name=name
            )
    except SourceError as err:
        st.error(f"Nothing was imported: {err}.")
        return
    st.session_state["import_report"] = report


upload_tab, server_tab = st.tabs(["Upload a zip", "Folder or manifest on the server"])
with upload_tab, st.form("upload", clear_on_submit=True):
    upload = st.file_uploader("Zip file", type=["zip"])
    use_labels = st.checkbox("Import the labels it contains (never replaces an existing label)", value=True)
    if st.form_submit_button("Import the zip", type="primary") and upload is not None:
        settings.data_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.data_root) as folder:
            archive = Path(folder) / "upload.zip"
            with archive.open("wb") as out:
                shutil.copyfileobj(upload, out)
            run_import(archive, upload.name, use_labels)

with server_tab, st.form("server_path"):
    path = st.text_input("Path on the server", placeholder="/data/endoscopy/2026-batch or /data/manifest.csv")
    folder_labels = st.checkbox("Import the labels it contains (never replaces an existing label)", value=True)
    if st.form_submit_button("Import", type="primary") and path.strip():
        source = Path(path.strip()).expanduser()
        if not source.exists():
            st.error(f"There is no file or folder at {source} on the server.")
        else:
            run_import(source, str(source), folder_labels)

report: ImportReport | None = st.session_state.get("import_report")
if report is not None:
    st.subheader(f"Report: {report.source}")
    (st.success if report.ok else st.error)(report.summary() + ".")
    for note in report.notes:
        st.info(note)
    if report.problems:
        st.write("Skipped, and why:")
        st.dataframe(report.problems_frame(), hide_index=True, width="stretch")
    if report.imported:
        with st.expander(f"{len(report.imported)} new case(s)"):
            st.dataframe(pd.DataFrame({"Case": report.imported}), hide_index=True, width="stretch")

"""MICS Studio — Streamlit entry point.

Until the labelling UI lands this is one page: the dataset's counts and a paginated list
of the imported cases.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import select

from mics_core.config import Settings
from mics_core.db import init_db
from mics_core.db.models import Case, Image, ImportBatch
from mics_core.stats import dataset_stats

PAGE_SIZE = 50

st.set_page_config(page_title="MICS Studio", layout="wide")


@st.cache_resource
def database(url: str):
    return init_db(url)


settings = Settings.from_env()
db = database(settings.db_url)
st.title("MICS Studio")

with db.session() as session:
    stats = dataset_stats(session)
    batches = list(session.scalars(select(ImportBatch.source).distinct()))

with st.sidebar:
    st.metric("Cases", stats.cases)
    st.metric("Labelled", stats.labelled)
    st.caption(f"NBI: {stats.with_real_nbi} real, {stats.with_computed_nbi} computed from WLI")

if "synthetic demo data" in batches:
    st.info("This project holds **synthetic demo data**: rendered images, not real patients.")

if not stats.cases:
    st.info("No cases yet — import a folder or use the demo data: `python -m mics_core import PATH`.")
    st.stop()

pages = max(1, -(-stats.cases // PAGE_SIZE))
page = st.number_input("Page", min_value=1, max_value=pages, value=1, step=1)
with db.session() as session:
    nbi = select(Image.id, Image.computed).subquery()
    rows = session.execute(
        select(Case.case_key, Case.split, Case.source, nbi.c.computed, Case.created_at)
        .outerjoin(nbi, Case.nbi_image_id == nbi.c.id)
        .order_by(Case.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
table = pd.DataFrame(rows, columns=["Case", "Split", "Source", "NBI computed", "Imported"])
st.caption(f"Cases {(page - 1) * PAGE_SIZE + 1}–{(page - 1) * PAGE_SIZE + len(table)} of {stats.cases}")
st.dataframe(table, hide_index=True, width="stretch")

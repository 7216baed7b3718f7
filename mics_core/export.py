"""Label export to CSV: one row per case, or (`history=True`) every annotation row.

Text cells that a spreadsheet would run as a formula (starting with =, +, -, @ or tab,
after any spaces) are prefixed with a single quote, the OWASP-recommended guard. Line
breaks inside a cell (CR, LF and every other character `str.splitlines` breaks at) become
one space first: quoted line breaks are valid CSV, but readers that split the file into
lines first would cut the row there and start a new one with the rest (which could be an
unguarded formula).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from mics_core.cases import CURRENT, LABEL, PREDICTED, case_query
from mics_core.db.models import Annotation, Case, Image, LabelClass, Prediction, User
from mics_core.registry import active_version_id

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t")
LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")

CASE_COLUMNS = [
    "case_id",
    "wli_file",
    "nbi_file",
    "nbi_computed",
    "split",
    "import_batch",
    "label",
    "labelled_by",
    "labelled_at",
    "n_annotations",
    "predicted_label",
    "probability",
    "uncertainty",
    "model_version",
]
HISTORY_COLUMNS = [
    "annotation_id",
    "case_id",
    "label",
    "user",
    "created_at",
    "source",
    "note",
    "suggestion_shown",
    "model_version",
]


def neutralise(value: object) -> object:
    """`value` made safe for a spreadsheet cell: on one line, and never a formula."""
    if not isinstance(value, str):
        return value
    value = LINE_BREAKS.sub(" ", value)
    if value.lstrip(" ").startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def cases_frame(session: Session) -> pd.DataFrame:
    """One row per case with its current label and the active model's prediction."""
    wli, nbi = aliased(Image), aliased(Image)
    counts = select(Annotation.case_id, func.count().label("n")).group_by(Annotation.case_id).subquery()
    query = (
        case_query(
            Case.case_key,
            wli.original_name,
            nbi.original_name,
            nbi.computed,
            Case.split,
            Case.batch_id,
            LABEL.name,
            User.username,
            CURRENT.created_at,
            func.coalesce(counts.c.n, 0),
            PREDICTED.name,
            Prediction.probability,
            Prediction.uncertainty,
            Prediction.model_version_id,
            version=active_version_id(),
            annotation=True,
        )
        .outerjoin(wli, Case.wli_image_id == wli.id)
        .outerjoin(nbi, Case.nbi_image_id == nbi.id)
        .outerjoin(User, CURRENT.user_id == User.id)
        .outerjoin(counts, counts.c.case_id == Case.id)
        .order_by(Case.id)
    )
    frame = pd.DataFrame(session.execute(query).all(), columns=CASE_COLUMNS)
    frame = frame.astype({"import_batch": "Int64", "n_annotations": "Int64", "model_version": "Int64"})
    # a cleared case has a newest annotation but no label: nobody labelled it
    frame["labelled_at"] = frame["labelled_at"].where(frame["label"].notna())
    frame["labelled_by"] = frame["labelled_by"].where(frame["label"].notna())
    return frame


def history_frame(session: Session) -> pd.DataFrame:
    """Every annotation row, oldest first."""
    query = (
        select(
            Annotation.id,
            Case.case_key,
            LabelClass.name,
            User.username,
            Annotation.created_at,
            Annotation.source,
            Annotation.note,
            Annotation.suggestion_shown,
            Annotation.model_version_id,
        )
        .join(Case, Annotation.case_id == Case.id)
        .outerjoin(LabelClass, Annotation.label_id == LabelClass.id)
        .outerjoin(User, Annotation.user_id == User.id)
        .order_by(Annotation.id)
    )
    frame = pd.DataFrame(session.execute(query).all(), columns=HISTORY_COLUMNS)
    return frame.astype({"annotation_id": "Int64", "model_version": "Int64"})


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The CSV a spreadsheet opens cleanly: UTF-8 with BOM, UTC ISO timestamps, guarded cells.

    SQLite hands timestamps back without a zone; they are stored in UTC, so both
    backends export the same text.
    """
    safe = frame.copy()
    for column in safe.columns:
        if column.endswith("_at"):
            safe[column] = pd.to_datetime(safe[column], utc=True)
        elif safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(neutralise)
    return safe.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ").encode("utf-8-sig")


def filter_frame(
    frame: pd.DataFrame,
    labels: list[str] | None = None,
    users: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Rows of either export whose label and annotator are among those given and whose label
    was given between `start` and `end` (UTC dates, both included); None means no filter."""
    user_column, time_column = ("labelled_by", "labelled_at") if "labelled_by" in frame else ("user", "created_at")
    keep = pd.Series(True, index=frame.index)
    if labels is not None:
        keep &= frame["label"].isin(labels)
    if users is not None:
        keep &= frame[user_column].isin(users)
    if start is not None or end is not None:
        day = pd.to_datetime(frame[time_column], utc=True).dt.date
        keep &= day.notna()
        if start is not None:
            keep &= day >= start
        if end is not None:
            keep &= day <= end
    return frame[keep.fillna(False).astype(bool)]


def export_csv(session: Session, out: Path, history: bool = False) -> int:
    """Write the export to `out`; return the number of rows."""
    frame = history_frame(session) if history else cases_frame(session)
    Path(out).write_bytes(to_csv_bytes(frame))
    return len(frame)

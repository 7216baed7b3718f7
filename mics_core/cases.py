"""The one query behind every list of cases: each case with its current label and one model
version's prediction.

The Overview table, a case's view, the review queue, the feature map, the export and the
nearest labelled neighbours all build on `case_query`, so "the current label" and "the
model's prediction" mean the same everywhere. The current label is found per case with a
correlated subquery on the annotations' (case_id, id) index: one index lookup per case,
never an aggregate over the whole history (`python -m bench.ui_scale` times each screen's
query; the review queue can then rank on the prediction index and stop after one page).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, false, select
from sqlalchemy.orm import aliased

from mics_core.db.models import Annotation, Case, LabelClass, Prediction
from mics_core.labels import current_annotation_id, current_label_id

# The joined rows, for the columns, filters and orders callers add: the current label's
# class, the current annotation row (with `annotation=True`), and the version's prediction
# (the plain `Prediction` entity) with its class.
LABEL = aliased(LabelClass, name="current_label")
CURRENT = aliased(Annotation, name="current_annotation")
PREDICTED = aliased(LabelClass, name="predicted_label")


def case_query(
    *columns: Any,
    version: int | ColumnElement[int | None] | None = None,
    predicted_only: bool = False,
    annotation: bool = False,
) -> Select:
    """`columns` of every case, from `cases` outer-joined to LABEL (NULL when the case is
    unlabelled or cleared) and to `version`'s `Prediction` and PREDICTED (NULL without a
    prediction, and always with `version` None).

    `version` is a version id or a subquery giving one (`registry.active_version_id()`);
    `predicted_only` keeps only the cases `version` predicted; `annotation` also joins
    CURRENT, the newest annotation row (who, when), and reads LABEL through it — one join
    more, so only the export asks for it.
    """
    query = select(*columns).select_from(Case)
    if annotation:
        # correlated on the annotation row, not the case: PostgreSQL then hashes the join on
        # case_id and checks newest-ness once per annotation, not once per case
        newest = (CURRENT.case_id == Case.id) & (CURRENT.id == current_annotation_id(CURRENT.case_id))
        query = query.outerjoin(CURRENT, newest).outerjoin(LABEL, CURRENT.label_id == LABEL.id)
    else:
        query = query.outerjoin(LABEL, LABEL.id == current_label_id(Case.id))
    # with no version the join still happens, on nothing, so the prediction columns read NULL
    on = false() if version is None else (Prediction.case_id == Case.id) & (Prediction.model_version_id == version)
    query = query.join(Prediction, on) if predicted_only else query.outerjoin(Prediction, on)
    return query.outerjoin(PREDICTED, Prediction.label_id == PREDICTED.id)

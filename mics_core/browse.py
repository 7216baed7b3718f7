"""Which cases the Label screen walks through, and everything it shows about one case.

Orders are computed in the database and returned as case ids only (a 10,000-case
project is 10,000 integers); a case's images and history are read one case at a time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from mics_core.cases import LABEL, PREDICTED, case_query
from mics_core.db.models import Annotation, Case, Image, ImportBatch, LabelClass, Prediction, User
from mics_core.errors import RequestRefused
from mics_core.labels import current_label_id
from mics_core.registry import active_version_id
from mics_core.store import ImageStore

ORDERS = ("unlabelled first", "by class", "by batch", "random")


class BrowseError(RequestRefused):
    """A request for cases that cannot be answered; the message says why."""


def case_order(
    session: Session,
    order: str = "unlabelled first",
    *,
    class_name: str | None = None,
    batch_id: int | None = None,
    seed: int = 0,
) -> list[int]:
    """Case ids in the order the labeller sees them."""
    label_id = current_label_id(Case.id)
    query = select(Case.id)
    if order == "unlabelled first":
        query = query.order_by(label_id.is_not(None), Case.id)
    elif order == "by class":
        class_id = session.scalar(select(LabelClass.id).where(LabelClass.name == class_name))
        if class_id is None:
            raise BrowseError(f"{class_name!r} is not in the class list")
        query = query.where(label_id == class_id).order_by(Case.id)
    elif order == "by batch":
        query = query.where(Case.batch_id == batch_id).order_by(Case.id)
    elif order == "random":
        ids = list(session.scalars(select(Case.id).order_by(Case.id)))
        random.Random(seed).shuffle(ids)
        return ids
    else:
        raise BrowseError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    return list(session.scalars(query))


def batches(session: Session) -> list[tuple[int, str]]:
    """(id, "#id source (date)") of every import batch, newest first."""
    rows = session.execute(
        select(ImportBatch.id, ImportBatch.source, ImportBatch.created_at).order_by(ImportBatch.id.desc())
    )
    return [(i, f"#{i} {source} ({created:%Y-%m-%d})") for i, source, created in rows]


@dataclass
class HistoryRow:
    label: str | None
    user: str | None
    at: datetime
    source: str
    note: str | None


@dataclass
class CaseView:
    """One case as the Label and Review screens show it."""

    id: int
    case_key: str
    wli: Path | None
    nbi: Path | None
    nbi_computed: bool
    label: str | None
    note: str | None
    history: list[HistoryRow] = field(default_factory=list)
    predicted: str | None = None
    probability: float | None = None


def case_view(session: Session, store: ImageStore, case_id: int) -> CaseView:
    case = session.get(Case, case_id)
    if case is None:
        raise BrowseError(f"there is no case {case_id}")
    rows = session.execute(
        select(LabelClass.name, User.username, Annotation.created_at, Annotation.source, Annotation.note)
        .select_from(Annotation)
        .outerjoin(LabelClass, Annotation.label_id == LabelClass.id)
        .outerjoin(User, Annotation.user_id == User.id)
        .where(Annotation.case_id == case_id)
        .order_by(Annotation.id.desc())
    ).all()
    history = [HistoryRow(*row) for row in rows]
    view = CaseView(
        id=case.id,
        case_key=case.case_key,
        wli=store.resolve(case.wli.path) if case.wli else None,
        nbi=store.resolve(case.nbi.path) if case.nbi else None,
        nbi_computed=bool(case.nbi and case.nbi.computed),
        label=history[0].label if history else None,
        note=history[0].note if history else None,
        history=history,
    )
    prediction = session.execute(
        case_query(PREDICTED.name, Prediction.probability, version=active_version_id(), predicted_only=True).where(
            Case.id == case_id
        )
    ).first()
    if prediction is not None:
        view.predicted, view.probability = prediction
    return view


def case_table(session: Session, offset: int = 0, limit: int = 50) -> pd.DataFrame:
    """One page of cases: key, current label, the active model's prediction, NBI origin, batch."""
    nbi = aliased(Image)
    rows = session.execute(
        case_query(
            Case.case_key,
            LABEL.name,
            PREDICTED.name,
            Prediction.probability,
            Prediction.uncertainty,
            nbi.computed,
            Case.batch_id,
            Case.created_at,
            version=active_version_id(),
        )
        .outerjoin(nbi, Case.nbi_image_id == nbi.id)
        .order_by(Case.id)
        .offset(offset)
        .limit(limit)
    ).all()
    columns = ["Case", "Label", "Predicted", "Probability", "Uncertainty", "NBI computed", "Batch", "Imported"]
    return pd.DataFrame(rows, columns=columns)

"""The class list and the append-only label history.

The current label of a case is its newest annotation row; nothing here updates or
deletes an annotation. Undo appends a row that restores the previous label (or clears
it, `label_id` NULL).

Every write to a case's history first takes that case's lock (`_lock_case`), held until
the transaction ends, so "is this still the newest row? then append" is one step: an
undo can never land after, and so roll back, a label someone gave in between.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, ScalarSelect, Select, false, func, select, update
from sqlalchemy.orm import Session

from mics_core.db.models import ANNOTATION_SOURCES, Annotation, Case, LabelClass
from mics_core.errors import RequestRefused


class LabelError(RequestRefused):
    """A label operation that would lose or corrupt labels; the message says why."""


def class_names(session: Session) -> list[str]:
    return list(session.scalars(select(LabelClass.name).order_by(LabelClass.position)))


def class_ids(session: Session) -> dict[str, int]:
    return dict(session.execute(select(LabelClass.name, LabelClass.id)).all())


def add_classes(session: Session, names: list[str]) -> list[str]:
    """Append new class names to the class list (existing ones are kept); return the added."""
    existing = set(class_names(session))
    position = session.scalar(select(func.coalesce(func.max(LabelClass.position), -1))) + 1
    added = []
    for raw in names:
        name = raw.strip()
        if not name or len(name) > 100:
            raise LabelError(f"class name {raw!r} must be 1 to 100 characters")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise LabelError(f"class name {raw!r} contains a control character (line break, tab…); remove it")
        if name in existing:
            continue
        session.add(LabelClass(name=name, position=position))
        existing.add(name)
        added.append(name)
        position += 1
    session.flush()
    return added


def newest_annotation_ids(upto: int | None = None) -> Select:
    """One row per annotated case: (case_id, newest annotation id), optionally as of a snapshot."""
    query = select(Annotation.case_id, func.max(Annotation.id).label("annotation_id"))
    if upto is not None:
        query = query.where(Annotation.id <= upto)
    return query.group_by(Annotation.case_id)


def current_annotation_id(case_id: ColumnElement[int]) -> ScalarSelect[int | None]:
    """The id of the newest annotation of the case `case_id` names (NULL when it has none), as
    a correlated subquery: one index lookup on (case_id, id), so screens can order and
    filter 10,000 cases by label without aggregating the whole history."""
    return _newest(Annotation.id, case_id)


def current_label_id(case_id: ColumnElement[int]) -> ScalarSelect[int | None]:
    """The current label id of the case in `case_id`'s row (NULL when unlabelled or cleared),
    with the same one index lookup as `current_annotation_id`."""
    return _newest(Annotation.label_id, case_id)


def _newest(column: ColumnElement, case_id: ColumnElement[int]) -> ScalarSelect:
    return select(column).where(Annotation.case_id == case_id).order_by(Annotation.id.desc()).limit(1).scalar_subquery()


def current_labels(session: Session, upto: int | None = None) -> dict[int, int]:
    """`{case_id: label_id}` of every currently labelled case (cleared cases are left out)."""
    newest = newest_annotation_ids(upto).subquery()
    rows = session.execute(
        select(Annotation.case_id, Annotation.label_id)
        .join(newest, Annotation.id == newest.c.annotation_id)
        .where(Annotation.label_id.is_not(None))
    )
    return dict(rows.all())


def label_snapshot(session: Session) -> int:
    """The id that pins today's labels: the newest annotation id (0 when none)."""
    return session.scalar(select(func.coalesce(func.max(Annotation.id), 0)))


def annotate(
    session: Session,
    case_id: int,
    label: str | None,
    *,
    source: str,
    user_id: int | None = None,
    note: str | None = None,
    suggestion_shown: bool = False,
    model_version_id: int | None = None,
) -> Annotation:
    """Append one annotation row (label None clears the case)."""
    if source not in ANNOTATION_SOURCES:
        raise LabelError(f"unknown annotation source {source!r}")
    label_id = None
    if label is not None:
        label_id = class_ids(session).get(label)
        if label_id is None:
            raise LabelError(f"{label!r} is not in the class list")
    _lock_case(session, case_id)
    row = Annotation(
        case_id=case_id,
        label_id=label_id,
        source=source,
        user_id=user_id,
        note=note or None,
        suggestion_shown=suggestion_shown,
        model_version_id=model_version_id,
    )
    session.add(row)
    session.flush()
    return row


def undo_annotation(session: Session, annotation_id: int, user_id: int | None = None) -> Annotation:
    """Undo one specific annotation (the one this user just made), only while it is still its
    case's newest: someone else's later label is never rolled back."""
    row = session.get(Annotation, annotation_id)
    if row is None:
        raise LabelError("there is no such label to undo")
    _lock_case(session, row.case_id)
    newest = session.scalar(select(func.max(Annotation.id)).where(Annotation.case_id == row.case_id))
    if newest != annotation_id:
        raise LabelError("the case was labelled again since, so that label is no longer the current one")
    return undo(session, row.case_id, user_id)


def undo(session: Session, case_id: int, user_id: int | None = None) -> Annotation:
    """Restore the label the case had before its newest annotation, as a new row."""
    _lock_case(session, case_id)
    history = list(
        session.scalars(select(Annotation).where(Annotation.case_id == case_id).order_by(Annotation.id.desc()).limit(2))
    )
    if not history:
        raise LabelError("this case has no label to undo")
    previous = history[1].label_id if len(history) > 1 else None
    row = Annotation(case_id=case_id, label_id=previous, source="undo", user_id=user_id)
    session.add(row)
    session.flush()
    return row


def _lock_case(session: Session, case_id: int) -> None:
    """Hold the lock on one case's label history until the transaction ends (re-entrant).

    PostgreSQL: the case row, `FOR NO KEY UPDATE` (labels of other cases, and inserts that
    only reference the case, such as predictions, never wait). SQLite: a write that changes
    nothing, which takes the database's single write lock before the caller reads the
    history (the driver starts a transaction only at the first write, so a read before it
    would see a state another writer can change before our insert)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Case.id).where(Case.id == case_id).with_for_update(key_share=True))
    else:
        session.execute(update(Case).where(false()).values(case_key=Case.case_key))

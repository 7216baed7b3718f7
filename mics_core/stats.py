"""Counts for the CLI `stats` command and the app's sidebar."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mics_core.db.models import Case, Image, LabelClass
from mics_core.labels import current_labels


@dataclass
class DatasetStats:
    cases: int
    labelled: int
    per_class: dict[str, int] = field(default_factory=dict)
    with_wli: int = 0
    with_real_nbi: int = 0
    with_computed_nbi: int = 0


def dataset_stats(session: Session) -> DatasetStats:
    """Case count, labelled count per class (every class, zeros included), modalities present."""
    cases = session.scalar(select(func.count()).select_from(Case))
    with_wli = session.scalar(select(func.count()).where(Case.wli_image_id.is_not(None)))
    nbi = dict(
        session.execute(
            select(Image.computed, func.count()).join(Case, Case.nbi_image_id == Image.id).group_by(Image.computed)
        ).all()
    )
    counts = Counter(current_labels(session).values())
    classes = session.execute(select(LabelClass.id, LabelClass.name).order_by(LabelClass.position)).all()
    per_class = {name: counts.get(class_id, 0) for class_id, name in classes}
    return DatasetStats(cases, sum(counts.values()), per_class, with_wli, nbi.get(False, 0), nbi.get(True, 0))

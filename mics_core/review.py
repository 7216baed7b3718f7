"""The review queue: the active model's predictions ranked by how much a look would help.

Ranking and filtering happen in the database on the indexed prediction columns; only
the requested page of cases comes back. Ties are broken by case id, so the order is
deterministic. `diversity` is the cold-start strategy: k-means in feature space, one
typical case per cluster, biggest clusters first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from sklearn.cluster import KMeans
from sqlalchemy import case as when
from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from mics_core.cases import LABEL, PREDICTED, case_query
from mics_core.db.models import Annotation, Case, Image, LabelClass, ModelVersion, Prediction
from mics_core.labels import annotate
from mics_core.registry import active_version
from mics_core.store import ImageStore

STRATEGIES = ("uncertainty", "margin", "disagreement", "predicted class", "diversity", "random")
UNCERTAINTY_BANDS = (0.0, 0.25, 0.5, 0.75, 1.0001)


class ReviewError(ValueError):
    """A review request that cannot be answered; the message says why."""


@dataclass(frozen=True)
class QueueItem:
    case_id: int
    case_key: str
    predicted: str | None
    probability: float | None
    score: float
    label: str | None


@dataclass(frozen=True)
class Filters:
    unlabelled_only: bool = False
    label_disagrees: bool = False  # the current label differs from the prediction: label errors
    predicted_class: str | None = None
    min_uncertainty: float | None = None
    case_ids: tuple[int, ...] | None = None  # only these cases (a selection sent from Explore)


def rank(
    session: Session,
    strategy: str = "uncertainty",
    limit: int = 50,
    filters: Filters | None = None,
    seed: int = 0,
    store: ImageStore | None = None,
) -> list[QueueItem]:
    """The top `limit` cases by `strategy` among those passing `filters`."""
    if strategy not in STRATEGIES:
        raise ReviewError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    filters = filters or Filters()
    version = active_version(session)
    if version is None and strategy not in ("diversity", "random"):
        raise ReviewError("there is no model yet: use the diversity or random strategy, or retrain first")
    base, score = _candidates(session, version, filters)
    if strategy == "diversity":
        return _diverse(session, version, base, limit, seed, store)
    if strategy == "random":
        ids = list(session.scalars(select(base.c.case_id).order_by(base.c.case_id)))
        random.Random(seed).shuffle(ids)
        chosen = ids[:limit]
        rows = {item.case_id: item for item in _items(session, base, base.c.case_id.in_(chosen), score["random"])}
        return [rows[i] for i in chosen]
    if strategy == "predicted class" and filters.predicted_class is None:
        raise ReviewError("pick the predicted class to review")
    return _items(session, base, None, score[strategy], limit)


def _candidates(session: Session, version: ModelVersion | None, filters: Filters):
    """One row per candidate case: ids, key, current label, and the active prediction's columns."""
    query = case_query(
        Case.id.label("case_id"),
        Case.case_key,
        LABEL.name.label("label"),
        PREDICTED.name.label("predicted"),
        Prediction.probability,
        Prediction.margin,
        Prediction.uncertainty,
        Prediction.conflict,
        Prediction.wli_label_id,
        Prediction.nbi_label_id,
        version=version.id if version else None,
        predicted_only=version is not None,
    )
    if filters.unlabelled_only:
        query = query.where(LABEL.id.is_(None))
    if filters.label_disagrees:
        query = query.where(LABEL.id.is_not(None), LABEL.id != Prediction.label_id)
    if filters.predicted_class is not None:
        class_id = session.scalar(select(LabelClass.id).where(LabelClass.name == filters.predicted_class))
        if class_id is None:
            raise ReviewError(f"{filters.predicted_class!r} is not in the class list")
        query = query.where(Prediction.label_id == class_id)
    if filters.case_ids is not None:
        query = query.where(Case.id.in_(filters.case_ids))
    if filters.min_uncertainty is not None:
        query = query.where(Prediction.uncertainty >= filters.min_uncertainty)
    base = query.subquery()
    disagree = when((base.c.wli_label_id != base.c.nbi_label_id, 1.0), else_=0.0)
    score = {
        "uncertainty": base.c.uncertainty,
        "margin": -base.c.margin,
        # heads that disagree come first; among them, and then among the rest, higher conflict first
        "disagreement": disagree + func.coalesce(base.c.conflict, 0.0),
        "predicted class": base.c.uncertainty,
        "random": literal(0.0),
    }
    return base, score


def _items(session: Session, base, where, score, limit: int | None = None) -> list[QueueItem]:
    query = select(
        base.c.case_id, base.c.case_key, base.c.predicted, base.c.probability, score, base.c.label
    ).order_by(score.desc(), base.c.case_id)
    if where is not None:
        query = query.where(where)
    if limit is not None:
        query = query.limit(limit)
    return [
        QueueItem(case_id, key, name, probability, float(value or 0.0), current)
        for case_id, key, name, probability, value, current in session.execute(query)
    ]


def features(
    session: Session, case_ids: list[int], version: ModelVersion | None, store: ImageStore | None
) -> np.ndarray:
    """One vector per case: the active model's fused embedding, or (no model yet) a 16×16
    colour thumbnail of the WLI image — crude, but enough to spread the first labels out."""
    if version is not None:
        rows = dict(
            session.execute(
                select(Prediction.case_id, Prediction.embedding).where(
                    Prediction.model_version_id == version.id, Prediction.case_id.in_(case_ids)
                )
            ).all()
        )
        return np.stack([np.frombuffer(rows[i], np.float16).astype(np.float32) for i in case_ids])
    if store is None:
        raise ReviewError("the image store is needed to pick diverse cases before there is a model")
    paths = dict(
        session.execute(
            select(Case.id, Image.thumb_path).join(Image, Case.wli_image_id == Image.id).where(Case.id.in_(case_ids))
        ).all()
    )
    vectors = []
    for i in case_ids:
        with PILImage.open(store.resolve(paths[i])) as thumb:
            vectors.append(np.asarray(thumb.convert("RGB").resize((16, 16)), np.float32).ravel() / 255.0)
    return np.stack(vectors)


def _diverse(session, version, base, limit: int, seed: int, store: ImageStore | None) -> list[QueueItem]:
    ids = list(session.scalars(select(base.c.case_id).order_by(base.c.case_id)))
    if len(ids) <= limit:
        chosen, sizes = ids, [1.0] * len(ids)
    else:
        vectors = features(session, ids, version, store)
        kmeans = KMeans(n_clusters=limit, n_init=3, random_state=seed).fit(vectors)
        distance = kmeans.transform(vectors)
        counts = np.bincount(kmeans.labels_, minlength=limit)
        picks = []
        for cluster in range(limit):
            members = np.flatnonzero(kmeans.labels_ == cluster)
            if len(members):
                picks.append((int(counts[cluster]), ids[members[distance[members, cluster].argmin()]]))
        picks.sort(key=lambda p: (-p[0], p[1]))
        chosen, sizes = [case_id for _, case_id in picks], [float(size) for size, _ in picks]
    rows = {item.case_id: item for item in _items(session, base, base.c.case_id.in_(chosen), literal(0.0))}
    return [
        QueueItem(c, rows[c].case_key, rows[c].predicted, rows[c].probability, size, rows[c].label)
        for c, size in zip(chosen, sizes, strict=True)
    ]


def record_review(
    session: Session, case_id: int, label: str, predicted: str | None, user_id: int | None, version_id: int | None
) -> Annotation:
    """The reviewer's verdict as an annotation: `review-accept` when it is the prediction,
    `review-correct` otherwise, both recording that the suggestion was shown; with no
    prediction (cold start) it is a plain `manual` label."""
    if predicted is None:
        return annotate(session, case_id, label, source="manual", user_id=user_id)
    source = "review-accept" if label == predicted else "review-correct"
    return annotate(
        session, case_id, label, source=source, user_id=user_id, suggestion_shown=True, model_version_id=version_id
    )


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    reviewed: int
    corrected: int


def corrections_by_uncertainty(session: Session) -> list[Band]:
    """Reviewed predictions and how many were corrected, per band of the prediction's uncertainty.

    If uncertainty means something, the corrected share grows from band to band.
    """
    band = when(
        *[(Prediction.uncertainty < high, i) for i, high in enumerate(UNCERTAINTY_BANDS[1:])],
        else_=len(UNCERTAINTY_BANDS) - 2,
    )
    rows = session.execute(
        select(band, func.count(), func.sum(when((Annotation.source == "review-correct", 1), else_=0)))
        .select_from(Annotation)
        .join(
            Prediction,
            (Prediction.case_id == Annotation.case_id) & (Prediction.model_version_id == Annotation.model_version_id),
        )
        .where(Annotation.source.in_(("review-accept", "review-correct")))
        .group_by(band)
    ).all()
    found = {int(b): (int(n), int(c or 0)) for b, n, c in rows}
    return [
        Band(UNCERTAINTY_BANDS[i], min(UNCERTAINTY_BANDS[i + 1], 1.0), *found.get(i, (0, 0)))
        for i in range(len(UNCERTAINTY_BANDS) - 1)
    ]


def prediction(session: Session, version_id: int, case_id: int) -> Prediction | None:
    return session.scalar(
        select(Prediction).where(Prediction.model_version_id == version_id, Prediction.case_id == case_id)
    )


def nearest_labelled(session: Session, case_id: int, k: int = 3) -> list[tuple[int, str, str, float]]:
    """The k labelled cases closest to `case_id` in the active model's feature space:
    (case id, key, label, cosine similarity)."""
    version = active_version(session)
    if version is None:
        return []
    rows = session.execute(
        case_query(Case.id, Case.case_key, LABEL.name, Prediction.embedding, version=version.id, predicted_only=True)
        .where(LABEL.id.is_not(None), Case.id != case_id)
        .order_by(Case.id)
    ).all()
    query = session.scalar(
        select(Prediction.embedding).where(Prediction.model_version_id == version.id, Prediction.case_id == case_id)
    )
    if not rows or query is None:
        return []
    matrix = np.stack([np.frombuffer(r[3], np.float16).astype(np.float32) for r in rows])
    target = np.frombuffer(query, np.float16).astype(np.float32)
    similarity = matrix @ target / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(target) + 1e-8)
    best = np.argsort(-similarity, kind="stable")[:k]
    return [(rows[i][0], rows[i][1], rows[i][2], float(similarity[i])) for i in best]

"""The review queue: the active model's predictions ranked by how much a look would help.

Each ranking is a `Strategy` in `STRATEGIES`, by name: the Review screen and the CLI list
them from there. Ranking and filtering happen in the database on the indexed prediction
columns; only the requested page of cases comes back. Ties are broken by case id, so the
order is deterministic. `diversity` is the cold-start strategy: k-means in feature space,
one typical case per cluster, biggest clusters first.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import ColumnElement, Subquery, func, literal, select
from sqlalchemy import case as when
from sqlalchemy.orm import Session

from mics_core.cases import LABEL, PREDICTED, case_query
from mics_core.db.models import Annotation, Case, Image, LabelClass, ModelVersion, Prediction
from mics_core.errors import RequestRefused
from mics_core.labels import annotate
from mics_core.registry import active_version
from mics_core.store import ImageStore

UNCERTAINTY_BANDS = (0.0, 0.25, 0.5, 0.75, 1.0001)


class ReviewError(RequestRefused):
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


@dataclass(frozen=True)
class Pool:
    """The candidates of one review request (one row per case passing the filters, with the
    active prediction's columns) and what a strategy may need to pick from them."""

    session: Session
    rows: Subquery
    version: ModelVersion | None
    filters: Filters
    seed: int
    store: ImageStore | None

    def case_ids(self) -> list[int]:
        return list(self.session.scalars(select(self.rows.c.case_id).order_by(self.rows.c.case_id)))

    def top(self, score: ColumnElement[float], limit: int) -> list[QueueItem]:
        """The `limit` candidates with the highest `score`, ties by case id, ranked in the database."""
        return self._items(score, None, limit)

    def chosen(self, case_ids: list[int], scores: list[float] | None = None) -> list[QueueItem]:
        """These candidates, in this order, with these scores (0 without)."""
        rows = {item.case_id: item for item in self._items(literal(0.0), self.rows.c.case_id.in_(case_ids))}
        scores = scores or [0.0] * len(case_ids)
        return [replace(rows[i], score=score) for i, score in zip(case_ids, scores, strict=True)]

    def _items(self, score: ColumnElement[float], where: ColumnElement[bool] | None, limit: int | None = None):
        c = self.rows.c
        query = select(c.case_id, c.case_key, c.predicted, c.probability, score, c.label)
        query = query.order_by(score.desc(), c.case_id).limit(limit)
        if where is not None:
            query = query.where(where)
        return [
            QueueItem(case_id, key, predicted, probability, float(value or 0.0), label)
            for case_id, key, predicted, probability, value, label in self.session.execute(query)
        ]


class Strategy(ABC):
    """One way to order the review queue: MONAI Label's `Strategy` shape, a description and one call."""

    needs_model = True

    def __init__(self, description: str) -> None:
        self.description = description

    @abstractmethod
    def __call__(self, pool: Pool, limit: int) -> list[QueueItem]:
        """The first `limit` cases of the queue."""


class ByScore(Strategy):
    """Rank by a score of the prediction's columns, highest first, in the database."""

    def __init__(self, description: str, score: Callable[[Any], ColumnElement[float]]) -> None:
        super().__init__(description)
        self.score = score

    def __call__(self, pool: Pool, limit: int) -> list[QueueItem]:
        return pool.top(self.score(pool.rows.c), limit)


class OfPredictedClass(ByScore):
    """A score ranking within the one predicted class the filters name."""

    def __call__(self, pool: Pool, limit: int) -> list[QueueItem]:
        if pool.filters.predicted_class is None:
            raise ReviewError("pick the predicted class to review")
        return super().__call__(pool, limit)


class RandomSample(Strategy):
    """A seeded random sample: the baseline every other strategy has to beat."""

    needs_model = False

    def __call__(self, pool: Pool, limit: int) -> list[QueueItem]:
        ids = pool.case_ids()
        random.Random(pool.seed).shuffle(ids)
        return pool.chosen(ids[:limit])


class Diversity(Strategy):
    """The cold start: k-means in feature space, one typical case per cluster, biggest clusters
    first; the score is the cluster's size."""

    needs_model = False

    def __call__(self, pool: Pool, limit: int) -> list[QueueItem]:
        from sklearn.cluster import KMeans  # a second's import, paid only by this strategy

        ids = pool.case_ids()
        if len(ids) <= limit:
            return pool.chosen(ids, [1.0] * len(ids))
        vectors = features(pool.session, ids, pool.version, pool.store)
        kmeans = KMeans(n_clusters=limit, n_init=3, random_state=pool.seed).fit(vectors)
        distance = kmeans.transform(vectors)
        counts = np.bincount(kmeans.labels_, minlength=limit)
        picks = []
        for cluster in range(limit):
            members = np.flatnonzero(kmeans.labels_ == cluster)
            if len(members):
                picks.append((int(counts[cluster]), ids[members[distance[members, cluster].argmin()]]))
        picks.sort(key=lambda p: (-p[0], p[1]))
        return pool.chosen([case_id for _, case_id in picks], [float(size) for size, _ in picks])


def _disagreement(c: Any) -> ColumnElement[float]:
    # heads that disagree come first; among them, and then among the rest, higher conflict first
    return when((c.wli_label_id != c.nbi_label_id, 1.0), else_=0.0) + func.coalesce(c.conflict, 0.0)


STRATEGIES: dict[str, Strategy] = {
    "uncertainty": ByScore("the fused uncertainty, highest first", lambda c: c.uncertainty),
    "margin": ByScore("the smallest gap between the two likeliest classes first", lambda c: -c.margin),
    "disagreement": ByScore("the WLI and NBI heads disagree first, then by modality conflict", _disagreement),
    "predicted class": OfPredictedClass("the predicted class asked for, most uncertain first", lambda c: c.uncertainty),
    "diversity": Diversity("typical cases of different clusters, biggest first (works before the first model)"),
    "random": RandomSample("a seeded random sample (works before the first model)"),
}
DEFAULT_STRATEGY = "uncertainty"
COLD_START_STRATEGY = "diversity"  # the default before there is a model


def rank(
    session: Session,
    strategy: str = DEFAULT_STRATEGY,
    limit: int = 50,
    filters: Filters | None = None,
    seed: int = 0,
    store: ImageStore | None = None,
) -> list[QueueItem]:
    """The top `limit` cases by `strategy` among those passing `filters`."""
    chosen = STRATEGIES.get(strategy)
    if chosen is None:
        raise ReviewError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    filters = filters or Filters()
    version = active_version(session)
    if version is None and chosen.needs_model:
        without = " or ".join(name for name, s in STRATEGIES.items() if not s.needs_model)
        raise ReviewError(f"there is no model yet: use the {without} strategy, or retrain first")
    return chosen(Pool(session, _candidates(session, version, filters), version, filters, seed, store), limit)


def _candidates(session: Session, version: ModelVersion | None, filters: Filters) -> Subquery:
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
    return query.subquery()


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


@dataclass(frozen=True)
class Neighbour:
    case_id: int
    case_key: str
    label: str
    similarity: float  # cosine, in the active model's feature space


def nearest_labelled(session: Session, case_id: int, k: int = 3) -> list[Neighbour]:
    """The k labelled cases closest to `case_id` in the active model's feature space, closest first."""
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
    return [Neighbour(*rows[i][:3], float(similarity[i])) for i in best]

"""The review queue: each ranking strategy on constructed predictions, the filters, recording
a verdict, corrections per uncertainty band, nearest labelled neighbours, and `queue` on the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from mics_core.cli import main
from mics_core.db.models import Prediction
from mics_core.labels import annotate, undo
from mics_core.review import (
    STRATEGIES,
    Band,
    Filters,
    ReviewError,
    corrections_by_uncertainty,
    nearest_labelled,
    rank,
    record_review,
)
from mics_core.store import ImageStore
from tests.conftest import add_model, add_user, make_project

# Eight cases; the first four are labelled normal, polyp, ulcer, normal (make_project's round-robin).
# Class indices: 0 normal, 1 polyp, 2 ulcer.
#          probs               predicted  margin  uncertainty  WLI/NBI heads  conflict  label
PROBS = [
    [0.8, 0.1, 0.1],  # 0      normal     0.7     0.2          agree          0.1       normal
    [0.5, 0.4, 0.1],  # 1      normal     0.1     0.7          0 / 1          0.3       polyp
    [0.1, 0.2, 0.7],  # 2      ulcer      0.5     0.4          agree          0.9       ulcer
    [0.1, 0.5, 0.4],  # 3      polyp      0.1     0.7          1 / 2          0.2       normal
    [0.4, 0.5, 0.1],  # 4      polyp      0.1     0.9          agree          0.0       -
    [0.2, 0.6, 0.2],  # 5      polyp      0.4     0.4          1 / 0          0.5       -
    [0.6, 0.2, 0.2],  # 6      normal     0.4     0.05         agree          0.95      -
    [0.2, 0.1, 0.7],  # 7      ulcer      0.5     0.55         agree          0.1       -
]
UNCERTAINTY = [0.2, 0.7, 0.4, 0.7, 0.9, 0.4, 0.05, 0.55]
WLI = [0, 0, 2, 1, 1, 1, 0, 2]
NBI = [0, 1, 2, 2, 1, 0, 0, 2]
CONFLICT = [0.1, 0.3, 0.9, 0.2, 0.0, 0.5, 0.95, 0.1]


@pytest.fixture
def cases(db, settings, tmp_path) -> list[int]:
    return make_project(db, settings, tmp_path, cases=8, labelled=4)


@pytest.fixture
def model(db, cases) -> int:
    return add_model(db, PROBS, UNCERTAINTY, wli=WLI, nbi=NBI, conflict=CONFLICT)


def queue(db, strategy: str, limit: int = 50, **kwargs) -> list:
    with db.session() as session:
        return rank(session, strategy, limit, **kwargs)


def positions(items, cases: list[int]) -> list[int]:
    """The queue as indices into the fixture's cases (row numbers of PROBS)."""
    return [cases.index(item.case_id) for item in items]


def test_uncertainty_puts_the_most_uncertain_first_ties_by_case_id(db, cases, model):
    items = queue(db, "uncertainty")
    assert positions(items, cases) == [4, 1, 3, 7, 2, 5, 0, 6]
    assert [item.score for item in items] == pytest.approx([0.9, 0.7, 0.7, 0.55, 0.4, 0.4, 0.2, 0.05])


def test_queue_items_carry_key_prediction_probability_and_current_label(db, cases, model):
    first, second = queue(db, "uncertainty", limit=2)
    assert (first.case_key, first.predicted, first.label) == ("case04", "polyp", None)
    assert (second.case_key, second.predicted, second.label) == ("case01", "normal", "polyp")
    assert first.probability == pytest.approx(0.5) and second.probability == pytest.approx(0.5)


def test_limit_keeps_the_top_of_the_queue(db, cases, model):
    assert positions(queue(db, "uncertainty", limit=3), cases) == [4, 1, 3]


def test_margin_puts_the_smallest_margin_first_ties_by_case_id(db, cases, model):
    items = queue(db, "margin")
    assert positions(items, cases) == [1, 3, 4, 5, 6, 2, 7, 0]
    assert items[0].score == pytest.approx(-0.1) and items[-1].score == pytest.approx(-0.7)


def test_disagreement_puts_disagreeing_heads_first_then_orders_by_conflict(db, cases, model):
    # heads disagree on 5 (conflict 0.5), 1 (0.3), 3 (0.2); the rest by conflict, 0 and 7 tied at 0.1
    items = queue(db, "disagreement")
    assert positions(items, cases) == [5, 1, 3, 6, 2, 0, 7, 4]
    assert items[0].score == pytest.approx(1.5) and items[3].score == pytest.approx(0.95)


def test_predicted_class_lists_that_class_most_uncertain_first(db, cases, model):
    polyp = queue(db, "predicted class", filters=Filters(predicted_class="polyp"))
    normal = queue(db, "predicted class", filters=Filters(predicted_class="normal"))
    assert positions(polyp, cases) == [4, 3, 5] and {item.predicted for item in polyp} == {"polyp"}
    assert positions(normal, cases) == [1, 0, 6]


def test_predicted_class_strategy_needs_a_class(db, cases, model):
    with pytest.raises(ReviewError, match="pick the predicted class"):
        queue(db, "predicted class")


def test_random_is_a_seeded_permutation_of_the_candidates(db, cases, model):
    first = [item.case_id for item in queue(db, "random", seed=3)]
    assert sorted(first) == cases and first != cases
    assert [item.case_id for item in queue(db, "random", seed=3)] == first
    assert [item.case_id for item in queue(db, "random", seed=4)] != first
    assert [item.case_id for item in queue(db, "random", limit=3, seed=3)] == first[:3]
    unlabelled = [item.case_id for item in queue(db, "random", filters=Filters(unlabelled_only=True), seed=3)]
    assert sorted(unlabelled) == cases[4:]


def test_random_works_before_there_is_a_model(db, cases):
    items = queue(db, "random", seed=1)
    assert sorted(item.case_id for item in items) == cases
    assert all(item.predicted is None and item.probability is None for item in items)


@pytest.mark.parametrize("strategy", ["uncertainty", "margin", "disagreement", "predicted class"])
def test_model_strategies_need_a_model(db, cases, strategy):
    with pytest.raises(ReviewError, match="no model yet"):
        queue(db, strategy, filters=Filters(predicted_class="polyp"))


def test_unknown_strategy_is_refused(db, cases, model):
    with pytest.raises(ReviewError, match="unknown strategy 'newest'"):
        queue(db, "newest")
    assert "diversity" in STRATEGIES and "random" in STRATEGIES


def _check_diverse(items, cases: list[int], limit: int) -> None:
    ids = [item.case_id for item in items]
    assert len(ids) == limit and len(set(ids)) == limit and set(ids) <= set(cases)
    sizes = [item.score for item in items]
    assert sizes == sorted(sizes, reverse=True)  # biggest clusters first
    assert sum(sizes) == len(cases)  # each case belongs to one cluster


def test_diversity_without_a_model_clusters_thumbnails(db, settings, cases):
    store = ImageStore(settings)
    items = queue(db, "diversity", limit=3, store=store)
    _check_diverse(items, cases, 3)
    assert queue(db, "diversity", limit=3, store=store) == items  # deterministic for a seed


def test_diversity_without_a_model_needs_the_image_store(db, cases):
    with pytest.raises(ReviewError, match="image store"):
        queue(db, "diversity", limit=3)


def test_diversity_with_a_model_clusters_embeddings(db, cases, model):
    items = queue(db, "diversity", limit=3)  # no store needed: the embeddings are in the database
    _check_diverse(items, cases, 3)
    assert all(item.predicted is not None for item in items)


def test_diversity_with_few_candidates_returns_them_all(db, settings, cases):
    items = queue(db, "diversity", limit=10, store=ImageStore(settings))
    assert [item.case_id for item in items] == cases and {item.score for item in items} == {1.0}


def test_unlabelled_only_filter(db, cases, model):
    items = queue(db, "uncertainty", filters=Filters(unlabelled_only=True))
    assert positions(items, cases) == [4, 7, 5, 6] and all(item.label is None for item in items)


def test_label_disagrees_filter_finds_labels_that_differ_from_the_prediction(db, cases, model):
    items = queue(db, "uncertainty", filters=Filters(label_disagrees=True))
    assert [(item.case_key, item.label, item.predicted) for item in items] == [
        ("case01", "polyp", "normal"),
        ("case03", "normal", "polyp"),
    ]


def test_predicted_class_filter_applies_to_any_strategy(db, cases, model):
    items = queue(db, "margin", filters=Filters(predicted_class="polyp"))
    assert positions(items, cases) == [3, 4, 5]
    with pytest.raises(ReviewError, match="not in the class list"):
        queue(db, "margin", filters=Filters(predicted_class="cancer"))


def test_min_uncertainty_filter_includes_the_threshold(db, cases, model):
    items = queue(db, "margin", filters=Filters(min_uncertainty=0.55))
    assert positions(items, cases) == [1, 3, 4, 7]


def test_filters_combine(db, cases, model):
    filters = Filters(unlabelled_only=True, min_uncertainty=0.4, predicted_class="polyp")
    items = queue(db, "uncertainty", filters=filters)
    assert positions(items, cases) == [4, 5]


@pytest.fixture
def reviewer(db) -> int:
    with db.session() as session:
        user = add_user(session, "dr_kim", "reviewer")
        return user.id


def test_accepting_the_prediction_is_recorded_as_review_accept(db, cases, model, reviewer):
    with db.session() as session:
        row = record_review(session, cases[4], "polyp", "polyp", reviewer, model)
        assert (row.source, row.suggestion_shown, row.model_version_id, row.user_id) == (
            "review-accept",
            True,
            model,
            reviewer,
        )
    assert queue(db, "uncertainty", limit=1)[0].label == "polyp"


def test_a_label_given_with_no_prediction_shown_is_a_plain_manual_label(db, cases, reviewer):
    with db.session() as session:
        row = record_review(session, cases[2], "ulcer", None, reviewer, None)
        assert (row.source, row.suggestion_shown, row.model_version_id) == ("manual", False, None)


def test_a_different_label_is_recorded_as_review_correct(db, cases, model, reviewer):
    with db.session() as session:
        row = record_review(session, cases[1], "polyp", "normal", reviewer, model)
        assert (row.source, row.suggestion_shown, row.model_version_id) == ("review-correct", True, model)
    # the label already disagreed; confirming it keeps the case among the label errors
    assert positions(queue(db, "uncertainty", filters=Filters(label_disagrees=True)), cases) == [1, 3]
    with db.session() as session:
        record_review(session, cases[3], "polyp", "polyp", reviewer, model)
    assert positions(queue(db, "uncertainty", filters=Filters(label_disagrees=True)), cases) == [1]


def test_corrections_are_counted_per_uncertainty_band(db, cases, model, reviewer):
    with db.session() as session:
        record_review(session, cases[0], "normal", "normal", reviewer, model)  # 0.2, accepted
        record_review(session, cases[2], "polyp", "ulcer", reviewer, model)  # 0.4, corrected
        record_review(session, cases[5], "polyp", "polyp", reviewer, model)  # 0.4, accepted
        record_review(session, cases[1], "polyp", "normal", reviewer, model)  # 0.7, corrected
        record_review(session, cases[4], "ulcer", "polyp", reviewer, model)  # 0.9, corrected
        annotate(session, cases[6], "normal", source="manual")  # not a review
        record_review(session, cases[7], "ulcer", "normal", reviewer, None)  # no model version: not counted
        bands = corrections_by_uncertainty(session)
    assert bands == [
        Band(0.0, 0.25, reviewed=1, corrected=0),
        Band(0.25, 0.5, reviewed=2, corrected=1),
        Band(0.5, 0.75, reviewed=1, corrected=1),
        Band(0.75, 1.0, reviewed=1, corrected=1),
    ]


def test_band_edges_belong_to_the_higher_band_and_certainty_one_to_the_last(db, cases, reviewer):
    version = add_model(db, [[0.5, 0.3, 0.2]] * 5, [0.0, 0.2499, 0.25, 0.75, 1.0])
    with db.session() as session:
        for case_id in cases[:5]:
            record_review(session, case_id, "polyp", "normal", reviewer, version)
        bands = corrections_by_uncertainty(session)
    assert [(b.reviewed, b.corrected) for b in bands] == [(2, 2), (1, 1), (0, 0), (2, 2)]


def test_corrections_by_uncertainty_with_no_reviews_has_empty_bands(db, cases, model):
    with db.session() as session:
        bands = corrections_by_uncertainty(session)
    assert len(bands) == 4 and all(b.reviewed == 0 and b.corrected == 0 for b in bands)


def _embeddings(db, version: int) -> dict[int, np.ndarray]:
    with db.session() as session:
        rows = session.execute(
            sa.select(Prediction.case_id, Prediction.embedding).where(Prediction.model_version_id == version)
        ).all()
    return {case_id: np.frombuffer(blob, np.float16).astype(np.float32) for case_id, blob in rows}


def _by_cosine(vectors: dict[int, np.ndarray], target: int, among: list[int]) -> list[int]:
    def cosine(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    return sorted(among, key=lambda i: -cosine(vectors[i], vectors[target]))


def test_nearest_labelled_are_labelled_cases_by_cosine_similarity(db, cases, model):
    vectors = _embeddings(db, model)
    with db.session() as session:
        found = nearest_labelled(session, cases[6], k=3)
    assert [n.case_id for n in found] == _by_cosine(vectors, cases[6], cases[:4])[:3]
    labels = dict(zip(cases[:4], ["normal", "polyp", "ulcer", "normal"], strict=True))
    for n in found:
        assert n.case_key == f"case{cases.index(n.case_id):02d}" and n.label == labels[n.case_id]
        expected = vectors[n.case_id] @ vectors[cases[6]]
        expected /= np.linalg.norm(vectors[n.case_id]) * np.linalg.norm(vectors[cases[6]])
        assert n.similarity == pytest.approx(expected, abs=1e-5)
    assert [n.similarity for n in found] == sorted((n.similarity for n in found), reverse=True)


def test_nearest_labelled_leaves_out_the_case_itself_and_cleared_cases(db, cases, model):
    vectors = _embeddings(db, model)
    with db.session() as session:
        found = nearest_labelled(session, cases[0], k=10)
        assert [n.case_id for n in found] == _by_cosine(vectors, cases[0], cases[1:4])
        undo(session, cases[3])  # clears its only label
        assert cases[3] not in [n.case_id for n in nearest_labelled(session, cases[0], k=10)]


def test_nearest_labelled_without_a_model_is_empty(db, cases):
    with db.session() as session:
        assert nearest_labelled(session, cases[5]) == []


def test_nearest_labelled_shows_each_neighbours_current_label(db, cases, model):
    with db.session() as session:
        annotate(session, cases[0], "ulcer", source="manual")  # relabelled
        annotate(session, cases[7], "polyp", source="manual")  # newly labelled
        found = {n.case_id: n.label for n in nearest_labelled(session, cases[6], k=10)}
    assert found == {cases[0]: "ulcer", cases[1]: "polyp", cases[2]: "ulcer", cases[3]: "normal", cases[7]: "polyp"}


def test_cli_queue_prints_one_tab_separated_line_per_case(db, settings, cases, model, monkeypatch, capsys):
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    assert main(["queue", "--strategy", "margin", "--limit", "3", "--db", settings.db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t") for line in lines] == [
        ["case01", "normal", "0.500", "-0.1000"],
        ["case03", "polyp", "0.500", "-0.1000"],
        ["case04", "polyp", "0.500", "-0.1000"],
    ]


def test_cli_queue_refuses_an_unknown_strategy(db, settings, cases, model, monkeypatch, capsys):
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    assert main(["queue", "--strategy", "newest", "--db", settings.db_url]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "error: unknown strategy 'newest'" in captured.err


def test_every_strategy_is_described_and_the_cli_help_lists_them_all(capsys):
    with pytest.raises(SystemExit):
        main(["queue", "--help"])
    help_text = capsys.readouterr().out
    for name, strategy in STRATEGIES.items():
        assert strategy.description and strategy.description in help_text
        assert (f"'{name}'" if " " in name else name) in help_text
    assert "'predicted class'" in help_text


def test_cli_queue_ranks_one_predicted_class(db, settings, cases, model, monkeypatch, capsys):
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    args = ["queue", "--strategy", "predicted class", "--class", "polyp", "--db", settings.db_url]
    assert main(args) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["case04", "case03", "case05"]

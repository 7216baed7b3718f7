"""The Label screen's case orders, one case's view, and the paged case table."""

from __future__ import annotations

import pytest

from mics_core.browse import BrowseError, batches, case_order, case_table, case_view
from mics_core.ingest.importer import import_source
from mics_core.labels import annotate, undo
from mics_core.store import ImageStore
from tests.conftest import add_model, add_user, make_project, write_image


@pytest.fixture
def project(db, settings, tmp_path) -> list[int]:
    """12 cases; the first 6 labelled normal, polyp, ulcer, normal, polyp, ulcer."""
    return make_project(db, settings, tmp_path, cases=12, labelled=6)


def test_unlabelled_first_puts_unlabelled_cases_first_each_group_by_id(db, project):
    with db.session() as session:
        assert case_order(session) == project[6:] + project[:6]
        assert case_order(session, "unlabelled first") == project[6:] + project[:6]


def test_a_cleared_case_counts_as_unlabelled(db, project):
    with db.session() as session:
        undo(session, project[3])  # its only label: undo clears it
        assert case_order(session, "unlabelled first") == [project[3], *project[6:], *project[:3], *project[4:6]]


def test_by_class_lists_only_cases_currently_labelled_with_that_class(db, project):
    with db.session() as session:
        assert case_order(session, "by class", class_name="normal") == [project[0], project[3]]
        assert case_order(session, "by class", class_name="polyp") == [project[1], project[4]]
        assert case_order(session, "by class", class_name="ulcer") == [project[2], project[5]]


def test_by_class_follows_relabelling_undo_and_clearing(db, project):
    with db.session() as session:
        annotate(session, project[0], "polyp", source="manual")
        assert case_order(session, "by class", class_name="normal") == [project[3]]
        assert case_order(session, "by class", class_name="polyp") == [project[0], project[1], project[4]]
        undo(session, project[0])  # back to normal
        assert case_order(session, "by class", class_name="normal") == [project[0], project[3]]
        assert case_order(session, "by class", class_name="polyp") == [project[1], project[4]]
        undo(session, project[3])  # cleared
        assert case_order(session, "by class", class_name="normal") == [project[0]]


def test_by_class_of_a_class_nobody_used_is_empty(db, project):
    from mics_core.labels import add_classes

    with db.session() as session:
        add_classes(session, ["adenoma"])
        assert case_order(session, "by class", class_name="adenoma") == []


@pytest.mark.parametrize("class_name", ["cancer", None])
def test_by_class_needs_a_class_from_the_list(db, project, class_name):
    with db.session() as session, pytest.raises(BrowseError, match="not in the class list"):
        case_order(session, "by class", class_name=class_name)


def test_by_batch_lists_one_import_batch_by_id(db, settings, tmp_path, project):
    for i in range(3):
        write_image(tmp_path / "more" / "WLI" / f"extra{i}.png", 100 + i, size=(32, 32))
    import_source(tmp_path / "more", db, settings)
    with db.session() as session:
        (second, second_name), (first, _) = batches(session)  # newest first
        assert second > first and second_name.startswith(f"#{second} more (")
        assert case_order(session, "by batch", batch_id=first) == project
        later = case_order(session, "by batch", batch_id=second)
        assert len(later) == 3 and later == sorted(later) and min(later) > max(project)
        assert case_order(session, "by batch", batch_id=second + 1) == []


def test_random_is_a_permutation_fixed_by_the_seed(db, project):
    with db.session() as session:
        first = case_order(session, "random", seed=7)
        assert sorted(first) == project and first != project
        assert case_order(session, "random", seed=7) == first
        assert case_order(session, "random", seed=8) != first


def test_unknown_order_is_refused(db, project):
    with db.session() as session, pytest.raises(BrowseError, match="unknown order 'newest'"):
        case_order(session, "newest")


def test_case_view_shows_images_label_note_and_history_newest_first(db, settings, project):
    with db.session() as session:
        user = add_user(session, "dr_lee")
        annotate(session, project[0], "polyp", source="manual", user_id=user.id, note="raised edge")
        view = case_view(session, ImageStore(settings), project[0])
    assert view.id == project[0] and view.case_key == "case00"
    assert view.wli.is_file() and view.nbi.is_file() and view.wli != view.nbi
    assert view.nbi_computed  # only WLI was imported, so NBI is the computed view
    assert view.label == "polyp" and view.note == "raised edge"
    assert [(h.label, h.user, h.source, h.note) for h in view.history] == [
        ("polyp", "dr_lee", "manual", "raised edge"),
        ("normal", None, "manual", None),
    ]
    assert view.history[0].at >= view.history[1].at
    assert view.predicted is None and view.probability is None  # no model yet


def test_case_view_of_an_unlabelled_and_of_a_cleared_case(db, settings, project):
    store = ImageStore(settings)
    with db.session() as session:
        fresh = case_view(session, store, project[6])
        assert fresh.label is None and fresh.note is None and fresh.history == []
        undo(session, project[1])
        cleared = case_view(session, store, project[1])
        assert cleared.label is None
        assert [(h.label, h.source) for h in cleared.history] == [(None, "undo"), ("polyp", "manual")]


def test_case_view_shows_the_active_models_prediction(db, settings, project):
    add_model(db, [[0.2, 0.7, 0.1]] * 12, [0.3] * 12)
    with db.session() as session:
        view = case_view(session, ImageStore(settings), project[0])
    assert view.predicted == "polyp" and view.probability == pytest.approx(0.7)


def test_case_view_of_a_missing_case_is_refused(db, settings, project):
    with db.session() as session, pytest.raises(BrowseError, match="no case"):
        case_view(session, ImageStore(settings), max(project) + 1)


def test_case_table_pages_through_cases_in_id_order(db, project):
    with db.session() as session:
        first = case_table(session, offset=0, limit=5)
        last = case_table(session, offset=10, limit=5)
        beyond = case_table(session, offset=12, limit=5)
    assert list(first.columns) == [
        "Case",
        "Label",
        "Predicted",
        "Probability",
        "Uncertainty",
        "NBI computed",
        "Batch",
        "Imported",
    ]
    assert list(first["Case"]) == [f"case{i:02d}" for i in range(5)]
    assert list(first["Label"]) == ["normal", "polyp", "ulcer", "normal", "polyp"]
    assert list(last["Case"]) == ["case10", "case11"] and last["Label"].isna().all()
    assert beyond.empty and list(beyond.columns) == list(first.columns)
    assert first["NBI computed"].all() and first["Predicted"].isna().all()


def test_case_table_shows_the_active_models_prediction(db, project):
    add_model(db, [[0.6, 0.3, 0.1]] * 6 + [[0.1, 0.1, 0.8]] * 6, [0.2] * 6 + [0.9] * 6)
    with db.session() as session:
        table = case_table(session, offset=4, limit=4)
    assert list(table["Case"]) == ["case04", "case05", "case06", "case07"]
    assert list(table["Predicted"]) == ["normal", "normal", "ulcer", "ulcer"]
    assert list(table["Probability"]) == pytest.approx([0.6, 0.6, 0.8, 0.8])
    assert list(table["Uncertainty"]) == pytest.approx([0.2, 0.2, 0.9, 0.9])

"""The one case query: current labels and one version's predictions, as every list of cases sees them."""

from __future__ import annotations

import pytest

from mics_core.cases import CURRENT, LABEL, PREDICTED, case_query
from mics_core.db.models import Case, Prediction, User
from mics_core.labels import annotate, undo
from tests.conftest import add_model, add_user, make_project


@pytest.fixture
def project(db, settings, tmp_path) -> list[int]:
    """Five cases: normal, polyp, ulcer, then two unlabelled; case 0 relabelled ulcer by dr_lee,
    case 1's label undone (cleared)."""
    ids = make_project(db, settings, tmp_path, cases=5, labelled=3)
    with db.session() as session:
        user = add_user(session, "dr_lee")
        annotate(session, ids[0], "ulcer", source="manual", user_id=user.id)
        undo(session, ids[1])
    return ids


def _rows(db, *columns, **options) -> list[tuple]:
    with db.session() as session:
        return [tuple(row) for row in session.execute(case_query(Case.id, *columns, **options).order_by(Case.id))]


@pytest.mark.parametrize("annotation", [False, True])
def test_the_label_is_the_newest_annotations_and_null_when_unlabelled_or_cleared(db, project, annotation):
    rows = _rows(db, LABEL.name, annotation=annotation)
    assert rows == list(zip(project, ["ulcer", None, "ulcer", None, None], strict=True))


def test_the_annotation_row_says_who_gave_the_current_label(db, project):
    with db.session() as session:
        query = case_query(Case.id, User.username, CURRENT.source, annotation=True).outerjoin(
            User, CURRENT.user_id == User.id
        )
        rows = dict((case_id, rest) for case_id, *rest in session.execute(query))
    assert rows[project[0]] == ["dr_lee", "manual"]
    assert rows[project[1]] == [None, "undo"]  # cleared: there is an annotation, without a label
    assert rows[project[3]] == [None, None]


def test_without_a_version_every_case_comes_with_null_prediction_columns(db, project):
    add_model(db, [[0.2, 0.7, 0.1]] * 5, [0.3] * 5)
    assert _rows(db, PREDICTED.name, Prediction.probability) == [(i, None, None) for i in project]


def test_a_versions_predictions_and_only_its_cases_when_asked(db, project):
    version = add_model(db, [[0.2, 0.7, 0.1]] * 3, [0.3] * 3)  # predicts the first three cases
    everyone = _rows(db, PREDICTED.name, version=version)
    assert everyone == [(i, "polyp" if n < 3 else None) for n, i in enumerate(project)]
    assert _rows(db, PREDICTED.name, version=version, predicted_only=True) == everyone[:3]
    assert _rows(db, PREDICTED.name, version=version + 1) == [(i, None) for i in project]  # another version's

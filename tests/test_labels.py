"""Undo takes back only the label this user just gave, and only while it is still current."""

from __future__ import annotations

import pytest

from mics_core.labels import LabelError, annotate, current_labels, undo_annotation
from tests.conftest import make_project


def test_undo_restores_the_label_before_the_one_given(db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=2, labelled=1)
    with db.session() as session:
        before = current_labels(session)[ids[0]]
        mine = annotate(session, ids[0], "ulcer", source="manual")
        undo_annotation(session, mine.id)
        assert current_labels(session)[ids[0]] == before


def test_a_label_given_since_by_someone_else_is_never_rolled_back(db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=2, labelled=0)
    with db.session() as session:
        mine = annotate(session, ids[0], "ulcer", source="manual")
        theirs = annotate(session, ids[0], "polyp", source="manual")
        with pytest.raises(LabelError, match="labelled again since"):
            undo_annotation(session, mine.id)
        assert current_labels(session)[ids[0]] == theirs.label_id

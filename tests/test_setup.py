"""First-run setup: the demo data goes only into an empty project, and the project says it holds it."""

from __future__ import annotations

from mics_core.setup import ensure_database, holds_demo_data
from tests.conftest import make_project


def test_the_demo_fills_an_empty_project_once_and_marks_it_synthetic(settings, db):
    assert "6 new case(s) imported" in ensure_database(settings, demo_pairs=6)
    assert ensure_database(settings, demo_pairs=6) == "database ready: 6 case(s)"
    with db.session() as session:
        assert holds_demo_data(session)


def test_a_project_of_imported_images_is_not_the_demo(settings, db, tmp_path):
    make_project(db, settings, tmp_path, cases=2, labelled=0)
    assert ensure_database(settings, demo_pairs=6) == "database ready: 2 case(s)"
    with db.session() as session:
        assert not holds_demo_data(session)

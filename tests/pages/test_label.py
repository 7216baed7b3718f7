"""The Label screen: one case at a time, class buttons record who labelled what, undo appends."""

from __future__ import annotations

from sqlalchemy import select

from mics_core.db.models import Annotation
from mics_core.labels import current_labels
from tests.conftest import CLASSES, make_project
from tests.pages.conftest import button


def test_empty_project_says_how_to_start(open_page):
    app = open_page("pages/label.py")
    assert "No cases yet" in app.info[0].value


def test_labelling_records_the_user_and_note_and_moves_on(open_page, db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=8, labelled=2)
    app = open_page("pages/label.py", role="annotator")
    assert not app.exception
    assert app.subheader[0].value == "Case case02"  # unlabelled first
    assert app.image[0].captions == ["White light (WLI)"]
    assert "computed from WLI" in app.image[1].captions[0]  # pseudo-NBI is marked as such
    app.text_input(key=f"note_{ids[2]}").input("flat lesion")
    button(app, "polyp").click().run()
    assert app.subheader[0].value == "Case case03"
    with db.session() as session:
        row = session.scalars(select(Annotation).order_by(Annotation.id.desc())).first()
        assert (row.case_id, row.note, row.source) == (ids[2], "flat lesion", "manual")
        assert row.user_id == app.session_state["user"].id
        assert CLASSES[current_labels(session)[ids[2]] - 1] == "polyp"


def test_undo_restores_the_previous_label_by_appending(open_page, db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=4, labelled=0)
    app = open_page("pages/label.py")
    button(app, "ulcer").click().run()
    button(app, "Undo").click().run()
    assert app.subheader[0].value == "Case case00"  # back on the undone case
    with db.session() as session:
        sources = list(session.scalars(select(Annotation.source).order_by(Annotation.id)))
        assert sources == ["manual", "undo"]
        assert ids[0] not in current_labels(session)


def test_skip_previous_and_next_walk_the_queue(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=4, labelled=0)
    app = open_page("pages/label.py")
    button(app, "Skip").click().run()
    button(app, "Next").click().run()
    assert app.subheader[0].value == "Case case02"
    button(app, "Previous").click().run()
    assert app.subheader[0].value == "Case case01"


def test_by_class_shows_only_that_class(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=9, labelled=6)
    app = open_page("pages/label.py")
    app.selectbox(key="label_order_kind").select("by class").run()
    app.selectbox(key="label_class_filter").select("polyp").run()
    assert app.subheader[0].value == "Case case01"
    assert "1 of 2" in app.caption[1].value


def test_a_selection_sent_from_explore_becomes_the_queue(open_page, db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=6, labelled=0)
    app = open_page("pages/label.py")
    app.session_state["label_selection"] = [ids[4], ids[1]]
    app.run()
    assert "selected in Explore" in app.info[0].value
    assert app.subheader[0].value == "Case case04"
    button(app, "Back to all cases").click().run()
    assert app.subheader[0].value == "Case case00"


def test_undo_with_nothing_given_here_changes_nothing(open_page, db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=3, labelled=3)
    app = open_page("pages/label.py")
    button(app, "Undo").click().run()
    with db.session() as session:
        assert len(current_labels(session)) == 3 and ids[0] in current_labels(session)
        assert "undo" not in set(session.scalars(select(Annotation.source)))

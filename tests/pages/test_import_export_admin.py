"""Import (folder and zip upload, with the report), Export (filters, download), Admin."""

from __future__ import annotations

import io
import zipfile

from sqlalchemy import func, select

from mics_core.db.models import Case, User
from mics_core.labels import class_names, current_labels
from tests.conftest import make_project, write_image
from tests.pages.conftest import button


def test_import_of_a_server_folder_reports_what_was_skipped_and_why(open_page, db, tmp_path):
    for i in range(3):
        write_image(tmp_path / "src" / "WLI" / f"c{i}.png", i)
    (tmp_path / "src" / "WLI" / "broken.png").write_bytes(b"\x89PNG not really")
    app = open_page("pages/import.py", role="reviewer")
    app.text_input[0].input(str(tmp_path / "src"))
    button(app, "Import").click().run()
    assert not app.exception
    assert app.success[0].value.startswith("3 new case(s) imported")
    problems = app.dataframe[0].value
    assert list(problems["file"]) == ["broken.png"]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 3


def test_import_can_leave_the_sources_labels_out(open_page, db, tmp_path):
    for name in ("polyp", "normal"):
        write_image(tmp_path / "src" / "WLI" / name / f"{name}.png", len(name))
    app = open_page("pages/import.py")
    app.text_input[0].input(str(tmp_path / "src"))
    app.checkbox[1].uncheck()
    button(app, "Import").click().run()
    assert app.success[0].value.startswith("2 new case(s) imported")
    with db.session() as session:
        assert current_labels(session) == {}


def test_import_of_a_missing_path_says_so(open_page, tmp_path):
    app = open_page("pages/import.py")
    app.text_input[0].input(str(tmp_path / "nowhere"))
    button(app, "Import").click().run()
    assert "There is no file or folder" in app.error[0].value


def test_a_zip_upload_is_imported_and_a_non_zip_is_refused(open_page, db, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(2):
            archive.write(write_image(tmp_path / f"w{i}.png", i), f"study/WLI/w{i}.png")
    app = open_page("pages/import.py")
    app.file_uploader[0].upload("study.zip", buffer.getvalue(), "application/zip")
    button(app, "Import the zip").click().run()
    assert not app.exception
    assert app.success[0].value.startswith("2 new case(s) imported")
    app.file_uploader[0].upload("fake.zip", b"not a zip", "application/zip")
    button(app, "Import the zip").click().run()
    assert "Nothing was imported" in app.error[0].value


def test_export_previews_filters_and_offers_the_csv(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=9, labelled=6)
    app = open_page("pages/export.py")
    assert len(app.dataframe[0].value) == 9
    app.multiselect[0].select("polyp").run()
    assert list(app.dataframe[0].value["label"]) == ["polyp", "polyp"]
    assert len(app.get("download_button")) == 1
    app.radio[0].set_value("Full history (every annotation)").run()
    assert set(app.dataframe[0].value["label"]) == {"polyp"}


def test_export_of_an_empty_project_says_so(open_page):
    app = open_page("pages/export.py", role="annotator")
    assert "Nothing to export yet" in app.info[0].value


def test_admin_adds_a_user_a_class_and_keeps_the_last_admin(open_page, db):
    app = open_page("pages/admin.py")
    name_box, password_box = app.text_input[0], app.text_input[1]
    name_box.input("dr.lee")
    password_box.input("a long password")
    button(app, "Add user").click().run()
    assert "Added dr.lee" in app.success[0].value
    app.text_input[2].input("barrett")
    button(app, "Add class").click().run()
    with db.session() as session:
        assert session.scalar(select(User.role).where(User.username == "dr.lee")) == "annotator"
        assert class_names(session)[-1] == "barrett"
    app.selectbox[0].select(app.session_state["user"].id)
    app.selectbox[1].select("annotator")
    button(app, "Save").click().run()
    assert "only administrator" in app.error[0].value

"""The schema: migrations, backend settings, and the append-only label history."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mics_core.db import init_db
from mics_core.db.models import Annotation, Case, Image, ImportBatch
from mics_core.labels import LabelError, add_classes, annotate, current_labels, label_snapshot, undo


def _case(session, key: str = "c1") -> Case:
    batch = ImportBatch(source="test")
    image = Image(
        sha256=key.ljust(64, "0"),
        modality="wli",
        path=f"store/{key}",
        thumb_path=f"store/t{key}",
        original_name=f"{key}.png",
        format="PNG",
        width=1,
        height=1,
        size_bytes=1,
    )
    session.add_all([batch, image])
    session.flush()
    case = Case(case_key=key, wli=image, source="test", batch_id=batch.id)
    session.add(case)
    session.flush()
    return case


def test_migrations_create_every_table_and_rerun_is_a_no_op(db_url):
    init_db(db_url)
    db = init_db(db_url)
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {
        "cases",
        "images",
        "annotations",
        "label_classes",
        "users",
        "jobs",
        "model_versions",
        "predictions",
        "import_batches",
        "alembic_version",
    } <= tables


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    db = init_db(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(db):
    with pytest.raises(sa.exc.IntegrityError), db.session() as session:
        session.add(Annotation(case_id=999, source="manual"))
        session.flush()


def test_current_label_is_the_newest_row_and_history_is_kept(db):
    with db.session() as session:
        add_classes(session, ["normal", "polyp"])
        case = _case(session)
        annotate(session, case.id, "normal", source="import")
        first = label_snapshot(session)
        annotate(session, case.id, "polyp", source="manual", note="raised lesion")
        assert current_labels(session) == {case.id: 2}
        assert current_labels(session, upto=first) == {case.id: 1}
        assert session.scalar(sa.select(sa.func.count()).select_from(Annotation)) == 2


def test_undo_appends_a_row_restoring_the_previous_label(db):
    with db.session() as session:
        add_classes(session, ["normal", "polyp"])
        case = _case(session)
        annotate(session, case.id, "normal", source="manual")
        annotate(session, case.id, "polyp", source="manual")
        undo(session, case.id)
        assert current_labels(session) == {case.id: 1}
        undo(session, case.id)  # undoing the undo brings the undone label back
        assert current_labels(session) == {case.id: 2}
        rows = session.scalars(sa.select(Annotation.source).order_by(Annotation.id)).all()
        assert rows == ["manual", "manual", "undo", "undo"]


def test_undo_of_a_first_label_clears_the_case(db):
    with db.session() as session:
        add_classes(session, ["normal"])
        case = _case(session)
        annotate(session, case.id, "normal", source="manual")
        undo(session, case.id)
        assert current_labels(session) == {}


def test_labels_outside_the_class_list_are_refused(db):
    with db.session() as session:
        add_classes(session, ["normal"])
        case = _case(session)
        with pytest.raises(LabelError, match="not in the class list"):
            annotate(session, case.id, "nonsense", source="manual")


def test_class_list_keeps_order_and_ignores_repeats(db):
    from mics_core.labels import class_names

    with db.session() as session:
        assert add_classes(session, ["b", "a"]) == ["b", "a"]
        assert add_classes(session, ["a", "c"]) == ["c"]
        assert class_names(session) == ["b", "a", "c"]


def test_describe_url_names_the_backend_and_masks_the_password():
    from mics_core.db import describe_url

    shown = describe_url("postgresql+psycopg://mics:s3cret@db.example:5432/mics")
    assert shown.startswith("postgresql — ") and "s3cret" not in shown and "db.example" in shown


def test_the_migrations_build_exactly_the_schema_the_models_describe(db_url):
    """A column added to a model without its migration (or the reverse) shows up here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mics_core.db.models import Base

    db = init_db(db_url)
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

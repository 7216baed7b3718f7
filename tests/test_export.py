"""Export: one row per case, full history, predictions, and the formula-injection guard."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from mics_core.browse import case_table
from mics_core.db.models import Case, LabelClass, ModelKind, ModelVersion, Prediction
from mics_core.export import cases_frame, export_csv, filter_frame, history_frame, neutralise, to_csv_bytes
from mics_core.ingest.importer import import_source
from mics_core.labels import LabelError, add_classes, annotate, class_ids, undo
from tests.conftest import add_user, write_image
from tests.ingest.test_importer import make_manifest


@pytest.fixture
def imported(tmp_path, db, settings):
    src = tmp_path / "src"
    for i in range(3):
        write_image(src / f"w{i}.png", i)
    make_manifest(src, ["a,w0.png,,polyp,", "=HYPERLINK(1),w1.png,,normal,", "c,w2.png,,,"])
    import_source(src / "manifest.csv", db, settings)
    return db


def _read(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", dtype=str, keep_default_na=False)


@pytest.mark.parametrize("cell", ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "  =1+1"])
def test_formula_cells_are_neutralised(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("x\r=2+3", "x =2+3"),
        ("a\r\nb", "a b"),
        ("\r=1+1", "' =1+1"),
        ("one\ntwo\n\nthree", "one two three"),
        ("x\u2028=1\x85@2\x0b+3\x1e-4", "x =1 @2 +3 -4"),
    ],
)
def test_line_breaks_in_a_cell_become_one_space_before_the_formula_guard(cell, safe):
    assert neutralise(cell) == safe
    assert len(safe.splitlines()) == 1


def test_plain_cells_and_numbers_are_untouched():
    assert neutralise("polyp") == "polyp" and neutralise(-3) == -3 and neutralise(None) is None


def test_export_one_row_per_case_with_current_label(imported, tmp_path):
    with imported.session() as session:
        case_a = session.scalar(sa.select(Case.id).where(Case.case_key == "a"))
        user = add_user(session, "dr_lee")
        annotate(session, case_a, "normal", source="manual", user_id=user.id)
        rows = export_csv(session, tmp_path / "out.csv")
    frame = _read((tmp_path / "out.csv").read_bytes()).set_index("case_id")
    assert rows == 3 and len(frame) == 3
    assert frame.loc["a", "label"] == "normal" and frame.loc["a", "labelled_by"] == "dr_lee"
    assert frame.loc["a", "n_annotations"] == "2"
    assert frame.loc["a", "labelled_at"].endswith("Z")
    assert frame.loc["c", "label"] == "" and frame.loc["c", "n_annotations"] == "0"
    assert frame.loc["c", "nbi_computed"] == "True" and frame.loc["a", "wli_file"] == "w0.png"
    assert "'=HYPERLINK(1)" in frame.index


def test_a_cleared_case_exports_no_label_nobody_and_no_time(imported, tmp_path):
    with imported.session() as session:
        case_a = session.scalar(sa.select(Case.id).where(Case.case_key == "a"))
        undo(session, case_a)  # its only label, from the import
        export_csv(session, tmp_path / "out.csv")
    row = _read((tmp_path / "out.csv").read_bytes()).set_index("case_id").loc["a"]
    assert (row["label"], row["labelled_by"], row["labelled_at"], row["n_annotations"]) == ("", "", "", "2")


def _predict_c(session, version: ModelVersion, probability: float) -> None:
    """`version` predicts polyp for case c with `probability`."""
    case_c = session.scalar(sa.select(Case.id).where(Case.case_key == "c"))
    session.add(
        Prediction(
            model_version_id=version.id,
            case_id=case_c,
            label_id=class_ids(session)["polyp"],
            probability=probability,
            margin=0.8,
            uncertainty=0.1,
            probs=[0.1, probability],
        )
    )


def _exported_c(session, tmp_path) -> pd.Series:
    export_csv(session, tmp_path / "out.csv")
    return _read((tmp_path / "out.csv").read_bytes()).set_index("case_id").loc["c"]


def test_export_includes_the_active_models_prediction(imported, tmp_path):
    with imported.session() as session:
        old = ModelVersion(kind=ModelKind.MICS, checkpoint_path="m1", active=False)
        new = ModelVersion(kind=ModelKind.MICS, checkpoint_path="m2", active=True)
        session.add_all([old, new])
        session.flush()
        _predict_c(session, old, 0.5)
        _predict_c(session, new, 0.9)
        row = _exported_c(session, tmp_path)
        new_id = new.id
    assert row["predicted_label"] == "polyp" and float(row["probability"]) == 0.9
    assert row["model_version"] == str(new_id)


def test_export_shows_the_predictions_the_screens_show(imported, tmp_path):
    """Only a MICS version counts as active, in the export as on every screen: a flagged row of
    another kind (the export used to read any active row) exports no prediction."""
    with imported.session() as session:
        encoders = ModelVersion(kind=ModelKind.ENCODERS, checkpoint_path="e1", active=True)
        session.add(encoders)
        session.flush()
        _predict_c(session, encoders, 0.9)
        row = _exported_c(session, tmp_path)
        table = case_table(session)
    assert row["predicted_label"] == "" and row["model_version"] == ""
    assert table["Predicted"].isna().all()


def test_history_exports_every_annotation_row(imported, tmp_path):
    with imported.session() as session:
        case_a = session.scalar(sa.select(Case.id).where(Case.case_key == "a"))
        annotate(session, case_a, "normal", source="review-correct", note="-looks flat", suggestion_shown=True)
        assert export_csv(session, tmp_path / "h.csv", history=True) == 3
    frame = _read((tmp_path / "h.csv").read_bytes())
    assert list(frame["source"]) == ["import", "import", "review-correct"]
    assert frame.iloc[2]["note"] == "'-looks flat" and frame.iloc[2]["suggestion_shown"] == "True"


def test_csv_is_utf8_with_bom_for_spreadsheets():
    data = to_csv_bytes(pd.DataFrame({"case_id": ["é"]}))
    assert data.startswith(b"\xef\xbb\xbf") and "é".encode() in data


@pytest.fixture
def dated(imported):
    """Case a relabelled normal by dr_lee on 1 March 2024 at 23:59 UTC, the formula case
    relabelled polyp by dr_kim on 3 March 00:00 UTC, case c unlabelled; the two import
    rows (no user, today) stay in the history."""
    with imported.session() as session:
        cases = dict(session.execute(sa.select(Case.case_key, Case.id)).all())
        lee, kim = add_user(session, "dr_lee"), add_user(session, "dr_kim", "reviewer")
        for key, label, user, at in [
            ("a", "normal", lee, datetime(2024, 3, 1, 23, 59, tzinfo=UTC)),
            ("=HYPERLINK(1)", "polyp", kim, datetime(2024, 3, 3, 0, 0, tzinfo=UTC)),
        ]:
            row = annotate(session, cases[key], label, source="manual", user_id=user.id)
            row.created_at = at
    with imported.session() as session:
        return cases_frame(session), history_frame(session)


def test_filter_frame_without_filters_keeps_every_row(dated):
    cases, history = dated
    assert filter_frame(cases).equals(cases) and filter_frame(history).equals(history)


def test_filter_frame_by_labels(dated):
    cases, history = dated
    assert list(filter_frame(cases, labels=["normal"])["case_id"]) == ["a"]
    assert list(filter_frame(cases, labels=["normal", "polyp"])["case_id"]) == ["a", "=HYPERLINK(1)"]
    assert list(filter_frame(history, labels=["normal"])[["case_id", "source"]].itertuples(index=False)) == [
        ("=HYPERLINK(1)", "import"),
        ("a", "manual"),
    ]
    assert filter_frame(cases, labels=[]).empty


def test_filter_frame_by_users(dated):
    cases, history = dated
    assert list(filter_frame(cases, users=["dr_kim"])["case_id"]) == ["=HYPERLINK(1)"]
    assert list(filter_frame(cases, users=["dr_kim", "dr_lee"])["case_id"]) == ["a", "=HYPERLINK(1)"]
    assert list(filter_frame(history, users=["dr_lee"])["label"]) == ["normal"]


def test_filter_frame_by_labels_and_users_together(dated):
    cases, history = dated
    assert filter_frame(cases, labels=["polyp"], users=["dr_lee"]).empty
    assert list(filter_frame(history, labels=["polyp"], users=["dr_kim"])["case_id"]) == ["=HYPERLINK(1)"]


@pytest.mark.parametrize(
    ("start", "end", "keys"),
    [
        (date(2024, 3, 1), date(2024, 3, 1), ["a"]),  # 23:59 UTC is still 1 March
        (date(2024, 3, 1), date(2024, 3, 3), ["a", "=HYPERLINK(1)"]),  # both ends included
        (date(2024, 3, 2), date(2024, 3, 2), []),
        (date(2024, 3, 3), None, ["=HYPERLINK(1)"]),
        (None, date(2024, 3, 2), ["a"]),
    ],
)
def test_filter_frame_by_date_range_includes_both_ends(dated, start, end, keys):
    cases, history = dated
    assert list(filter_frame(cases, start=start, end=end)["case_id"]) == keys
    manual = filter_frame(history, start=start, end=end)
    assert list(manual[manual["source"] == "manual"]["case_id"]) == keys


def test_a_date_filter_drops_unlabelled_cases(dated):
    cases, _ = dated
    assert "c" in set(cases["case_id"])
    assert list(filter_frame(cases, start=date(2000, 1, 1))["case_id"]) == ["a", "=HYPERLINK(1)"]


def test_a_date_filter_on_the_history_keeps_the_rows_of_those_days(dated):
    _, history = dated
    assert list(filter_frame(history, start=date(2024, 3, 4))["source"]) == ["import", "import"]  # imported today
    assert list(filter_frame(history, end=date(2024, 3, 4))["user"]) == ["dr_lee", "dr_kim"]


UNSAFE = ("=", "+", "-", "@", "\t")


def _lines_are_rows(data: bytes, rows: int) -> None:
    """The export read as a naive reader does: split into lines, then at commas."""
    text = data.decode("utf-8-sig")
    for lines in (text.splitlines(), text.rstrip("\n").split("\n")):
        assert len(lines) == rows + 1, lines
        for line in lines:
            for field in line.split(","):
                assert not field.strip('" ').startswith(UNSAFE), (field, line)
    assert len(list(csv.reader(io.StringIO(text)))) == rows + 1


def test_an_export_with_line_breaks_in_notes_and_class_names_keeps_one_line_per_row(imported, tmp_path):
    with imported.session() as session:
        case_a = session.scalar(sa.select(Case.id).where(Case.case_key == "a"))
        # a class name from before control characters were refused, put in directly
        session.add(LabelClass(name="bad\r=2+3", position=99))
        session.flush()
        annotate(session, case_a, "bad\r=2+3", source="manual", note="first\r\n=1+1\rsecond\n@SUM(A1)")
        for history, rows in ((False, 3), (True, 3)):
            assert export_csv(session, tmp_path / "out.csv", history=history) == rows
            data = (tmp_path / "out.csv").read_bytes()
            _lines_are_rows(data, rows)
            frame = _read(data)
            assert "bad =2+3" in set(frame["label"])
            if history:
                assert frame.iloc[-1]["note"] == "first =1+1 second @SUM(A1)"


@pytest.mark.parametrize("name", ["x\r=2+3", "a\nb", "tab\there", "bell\x07", "del\x7f"])
def test_class_names_with_control_characters_are_refused(db, name):
    with db.session() as session, pytest.raises(LabelError, match="control character"):
        add_classes(session, [name])

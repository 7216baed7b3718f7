"""`python -m mics_core`: real subprocesses against SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_image
from tests.ingest.test_importer import make_manifest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, data_root: Path, db_url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MICS_DATA_ROOT": str(data_root), "PYTHONPATH": str(ROOT)}
    env.pop("MICS_DB_URL", None)
    if db_url:
        env["MICS_DB_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "mics_core", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=data_root.parent,
        timeout=300,
    )


def test_help_lists_the_subcommands(tmp_path):
    out = run("--help", data_root=tmp_path / "data").stdout
    for command in ("demo", "import", "export", "stats", "init", "classes"):
        assert command in out


def test_demo_import_stats_export_round_trip(tmp_path, db_url):
    data = tmp_path / "data"
    demo = run("demo", "--out", str(tmp_path / "demo"), "--pairs", "8", "--size", "64", data_root=data)
    assert demo.returncode == 0, demo.stderr
    imported = run("import", str(tmp_path / "demo"), "--db", db_url, data_root=data)
    assert imported.returncode == 0, imported.stderr
    assert "8 new case(s) imported" in imported.stdout and "8 label(s) recorded" in imported.stdout
    stats = run("stats", data_root=data, db_url=db_url)  # URL from MICS_DB_URL this time
    assert "cases: 8" in stats.stdout and "labelled: 8" in stats.stdout and "8 real" in stats.stdout
    exported = run("export", "--out", str(tmp_path / "labels.csv"), "--db", db_url, data_root=data)
    assert exported.returncode == 0 and "wrote 8 rows" in exported.stdout
    assert len(pd.read_csv(tmp_path / "labels.csv")) == 8
    again = run("import", str(tmp_path / "demo" / "manifest.csv"), "--db", db_url, data_root=data)
    assert again.returncode == 0 and "0 new case(s) imported, 8 already present" in again.stdout


def test_import_exit_codes_and_report(tmp_path, db_url):
    data = tmp_path / "data"
    src = tmp_path / "src"
    (src / "broken.png").parent.mkdir(parents=True)
    (src / "broken.png").write_bytes(b"junk")
    make_manifest(src, ["x,broken.png,,,"])
    failed = run(
        "import", str(src / "manifest.csv"), "--db", db_url, "--report", str(tmp_path / "r.csv"), data_root=data
    )
    assert failed.returncode == 1 and "skipped  x  broken.png" in failed.stdout
    assert pd.read_csv(tmp_path / "r.csv").loc[0, "case_id"] == "x"
    write_image(src / "good.png", 1)
    make_manifest(src, ["x,broken.png,,,", "g,good.png,,,"])
    partial = run("import", str(src / "manifest.csv"), "--db", db_url, data_root=data)
    assert partial.returncode == 0 and "1 new case(s) imported" in partial.stdout
    make_manifest(src, ["g"], header="nothing_useful")
    refused = run("import", str(src / "manifest.csv"), "--db", db_url, data_root=data)
    assert refused.returncode == 2 and "missing the column(s)" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_database_url_defaults_to_sqlite_under_data(tmp_path):
    (tmp_path / "work").mkdir()
    result = run("stats", data_root=tmp_path / "work" / "data")
    assert result.returncode == 0 and (tmp_path / "work" / "data" / "mics.db").exists()


@pytest.mark.parametrize("args", [["init"], ["classes", "--add", "normal", "polyp"]])
def test_init_and_classes(tmp_path, db_url, args):
    result = run(*args, "--db", db_url, data_root=tmp_path / "data")
    assert result.returncode == 0, result.stderr


def test_init_with_demo_imports_the_demo_unlabelled_once(tmp_path):
    data = tmp_path / "data"
    first = run("init", "--demo", "--pairs", "8", data_root=data)
    assert first.returncode == 0 and "8 new case(s) imported" in first.stdout
    assert (data / "demo" / "manifest.csv").exists()
    stats = run("stats", data_root=data).stdout
    assert "cases: 8" in stats and "labelled: 0" in stats and "polyp: 0" in stats
    assert "database ready: 8 case(s)" in run("init", "--demo", data_root=data).stdout


def test_models_lists_versions_oldest_first_and_marks_the_active_one(settings, db, capsys):
    from mics_core.cli import main
    from mics_core.db.models import ModelKind, ModelVersion
    from mics_core.registry import activate

    assert main(["models", "--db", settings.db_url]) == 0
    assert "no model versions yet" in capsys.readouterr().out
    with db.session() as session:
        rows = [
            ModelVersion(kind=ModelKind.MICS, checkpoint_path="-", metrics={"accuracy": 0.75}, n_labels=8),
            ModelVersion(kind=ModelKind.MICS, checkpoint_path="-", n_labels=20),
        ]
        session.add_all(rows)
        session.flush()
        activate(session, rows[0].id)
    assert main(["models", "--db", settings.db_url]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith(f"* {rows[0].id:>4}") and "labels     8" in first and "held-out accuracy 0.750" in first
    assert second.startswith(f"  {rows[1].id:>4}") and second.endswith("held-out accuracy n/a  -")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cancel", "999"], "there is no job 999"),
        (["activate", "7"], "there is no model version 7 that can predict"),
        (["classes", "--add", " "], "must be 1 to 100 characters"),
    ],
)
def test_a_refused_request_is_one_error_line_and_exit_code_2(settings, db, capsys, args, message):
    from mics_core.cli import main

    assert main([*args, "--db", settings.db_url]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and "Traceback" not in captured.err


def _one_error_line(captured, *fragments: str) -> None:
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in captured.err


def test_import_labels_that_are_missing_or_a_folder_is_one_sentence_and_imports_nothing(settings, db, capsys, tmp_path):
    from mics_core.cli import main
    from mics_core.stats import dataset_stats

    write_image(tmp_path / "src" / "WLI" / "a.png", 0)
    for labels, fragment in ((tmp_path / "nope.csv", "does not exist"), (tmp_path / "src", "is a folder")):
        assert main(["import", str(tmp_path / "src"), "--labels", str(labels), "--db", settings.db_url]) == 2
        _one_error_line(capsys.readouterr(), fragment, "labels CSV")
    with db.session() as session:
        assert dataset_stats(session).cases == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["export", "--out", "{tmp}/missing/labels.csv"], "does not exist; create it first"),
        (["export", "--out", "{tmp}"], "is a folder; give a file name"),
        (["import", "{tmp}/src", "--report", "{tmp}/missing/r.csv"], "does not exist; create it first"),
        (["import", "{tmp}/src", "--report", "{tmp}/src"], "is a folder; give a file name"),
        (["bench", "--data", "{tmp}/missing.csv"], "the manifest"),
        (["import", "{tmp}/missing"], "does not exist"),
        (["demo", "--out", "/proc/mics/demo"], "check the path"),
    ],
)
def test_a_bad_path_is_one_sentence_and_nothing_is_done(settings, db, capsys, tmp_path, args, fragment):
    from mics_core.cli import main
    from mics_core.stats import dataset_stats

    write_image(tmp_path / "src" / "WLI" / "a.png", 0)
    database = ["--db", settings.db_url] if args[0] in ("import", "export") else []  # demo, bench: none
    assert main([arg.format(tmp=tmp_path) for arg in args] + database) == 2
    _one_error_line(capsys.readouterr(), fragment)
    with db.session() as session:
        assert dataset_stats(session).cases == 0


def test_a_5_mb_case_id_is_echoed_and_reported_cut(settings, db, capsys, tmp_path):
    from mics_core.cli import ECHO_CHARS, main

    src = tmp_path / "src"
    write_image(src / "good.png", 1)
    make_manifest(src, ["g,good.png,,,", "x" * 5_000_000 + ",good.png,,,"])
    report = tmp_path / "r.csv"
    assert main(["import", str(src / "manifest.csv"), "--report", str(report), "--db", settings.db_url]) == 0
    out = capsys.readouterr().out
    assert len(out) < 2_000
    assert "x" * ECHO_CHARS + "… (5,000,000 characters)" in out
    assert report.stat().st_size < 2_000
    assert pd.read_csv(report, encoding="utf-8-sig").loc[0, "case_id"].startswith("x" * ECHO_CHARS + "…")


def test_users_add_makes_the_first_admin_with_the_password_from_stdin(settings, db, capsys, monkeypatch):
    import io

    from mics_core.auth import authenticate
    from mics_core.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["users", "add", "--admin", "root", "--db", settings.db_url]) == 0
    assert "added admin root" in capsys.readouterr().out
    with db.session() as session:
        assert authenticate(session, "root", "a long password").role == "admin"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["users", "add", "Root", "--db", settings.db_url]) == 2
    _one_error_line(capsys.readouterr(), "is taken")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["users", "add", "ana", "--db", settings.db_url]) == 2
    _one_error_line(capsys.readouterr(), "no password given")
    assert main(["users", "list", "--db", settings.db_url]) == 0
    assert capsys.readouterr().out == "root\tadmin\n"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nonsense", "the database URL is not usable"),
        ("foo://x", "the database URL is not usable"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/x", "the database cannot be opened"),
        ("sqlite:///{tmp}/not-a.db", "file is not a database"),
    ],
)
def test_a_bad_database_url_is_one_sentence(tmp_path, capsys, url, fragment):
    from mics_core.cli import main

    (tmp_path / "not-a.db").write_text("garbage " * 100)
    assert main(["stats", "--db", url.format(tmp=tmp_path)]) == 2
    _one_error_line(capsys.readouterr(), fragment)

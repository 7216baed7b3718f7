"""Two imports of the same files at the same time, in separate processes, on both databases."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import sqlalchemy as sa

from mics_core.config import Settings
from mics_core.db.models import Case, Image
from tests.conftest import write_image


def _import(settings: Settings, source: Path, start, results) -> None:
    from mics_core.db import connect
    from mics_core.ingest.importer import import_source

    start.wait()
    try:
        report = import_source(source, connect(settings.db_url), settings)
        results.put((sorted(report.imported), sorted(report.unchanged), [p.reason for p in report.problems], None))
    except Exception as err:  # the test reports what the second import raised
        results.put(([], [], [], f"{type(err).__name__}: {err}"))


def test_two_imports_of_the_same_files_at_once_both_finish_and_import_each_case_once(tmp_path, settings, db):
    keys = [f"case{i:02d}" for i in range(30)]
    for i, key in enumerate(keys):
        write_image(tmp_path / "src" / "WLI" / f"{key}.png", i, size=(64, 64))
        write_image(tmp_path / "src" / "NBI" / f"{key}.png", 1000 + i, size=(64, 64))
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    imports = [context.Process(target=_import, args=(settings, tmp_path / "src", start, results)) for _ in range(2)]
    for process in imports:
        process.start()
    start.set()
    outcomes = [results.get(timeout=300) for _ in imports]
    for process in imports:
        process.join(timeout=60)
    assert [error for *_, error in outcomes] == [None, None]
    for imported, unchanged, problems, _ in outcomes:
        assert sorted(imported + unchanged) == keys and problems == []
    assert sorted(outcomes[0][0] + outcomes[1][0]) == keys  # each case imported by exactly one of them
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Case)) == 30
        assert session.scalar(sa.select(sa.func.count()).select_from(Image)) == 60

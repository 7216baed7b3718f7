"""The app starts and lists cases: AppTest for the page, a real server for `make run`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamlit.testing.v1 import AppTest

from mics_core.config import Settings
from mics_core.ingest.importer import import_source
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[1]


def _app(monkeypatch, settings: Settings) -> AppTest:
    monkeypatch.setenv("MICS_DB_URL", settings.db_url)
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()


def test_empty_project_shows_how_to_start(monkeypatch, settings):
    app = _app(monkeypatch, settings)
    assert not app.exception
    assert "No cases yet" in app.info[0].value


def test_imported_cases_are_listed_page_by_page(monkeypatch, settings, db, tmp_path):
    for i in range(60):
        write_image(tmp_path / "src" / "WLI" / f"case{i:02d}.png", i, size=(8, 8))
    import_source(tmp_path / "src", db, settings)
    app = _app(monkeypatch, settings)
    assert not app.exception
    assert [m.value for m in app.sidebar.metric][:2] == ["60", "0"]
    table = app.dataframe[0].value
    assert len(table) == 50 and table.iloc[0]["Case"] == "case00"
    app.number_input[0].set_value(2).run()
    assert list(app.dataframe[0].value["Case"]) == [f"case{i}" for i in range(50, 60)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_streamlit_server_starts_and_serves_the_app(tmp_path):
    port = _free_port()
    env = {**os.environ, "MICS_DATA_ROOT": str(tmp_path / "data"), "MICS_DB_URL": f"sqlite:///{tmp_path}/m.db"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    assert response.read() == b"ok"
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the Streamlit server did not come up within 60 s")
    finally:
        server.terminate()
        server.wait(timeout=30)

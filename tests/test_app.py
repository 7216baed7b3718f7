"""`streamlit run app.py` (what `make run` starts) serves the app; pages are tested in tests/pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_server_starts_and_serves_the_app(tmp_path):
    port = free_port()
    env = {**os.environ, "MICS_DATA_ROOT": str(tmp_path / "data"), "MICS_DB_URL": f"sqlite:///{tmp_path}/m.db"}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=30)

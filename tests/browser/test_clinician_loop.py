"""The whole loop in a real browser: Debian's Chromium driven by Playwright against a real
`streamlit run` server — first admin, demo data, keyboard labelling, retrain to the end,
review with the keyboard, a box selection in Explore sent to the label queue, CSV download.

A screenshot of every screen goes to the folder the test prints. Skipped where Chromium
is missing, unless MICS_REQUIRE_BROWSER=1 (CI), where that fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import free_port, wait_until_serving

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("MICS_SCREENSHOTS", ROOT / "data" / "screenshots"))
DEMO_PAIRS = 40
LABELLED = 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "MICS_DB_URL": f"sqlite:///{tmp_path}/mics.db",
        "MICS_DATA_ROOT": str(data),
        "MICS_DEMO_PAIRS": str(DEMO_PAIRS),
        "MICS_BACKBONE": "test_resnet",
        "MICS_IMAGE_SIZE": "64",
        "MICS_PRETRAIN_EPOCHS": "1",
        "MICS_FINETUNE_STEPS": "40",
        "MICS_WEIGHTS": "none",
    }
    env.pop("MICS_AUTH", None)
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port)]
    command += ["--server.headless", "true", "--server.address", "127.0.0.1"]
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url)
        yield url, data
    finally:
        process.terminate()
        process.wait(timeout=30)
        _stop_workers(tmp_path / "mics.db")


def _stop_workers(database: Path) -> None:
    """The app started a worker in its own session; its pid is in the workers table (absent
    when no page was ever opened, so the app never created its tables)."""
    with sqlite3.connect(database) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'workers'").fetchone():
            return
        pids = [row[0] for row in connection.execute("SELECT pid FROM workers")]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


@pytest.fixture
def browser_page():
    if not CHROMIUM.exists():
        if os.environ.get("MICS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_idle(page) -> None:
    """Until Streamlit has finished the current rerun."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)


def open_screen(page, title: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(title, exact=True).click()  # the app's page links
    page.get_by_role("heading", name=title).first.wait_for()
    wait_idle(page)


def current_case(page) -> str:
    text = page.get_by_role("heading", name=re.compile(r"^Case ")).first.inner_text()
    return text.removeprefix("Case ").strip()


def test_a_clinician_labels_retrains_reviews_explores_and_exports(browser_page, server):
    url, data = server
    page = browser_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SHOTS}")

    page.goto(f"{url}/overview")  # a fresh server runs pages/overview.py itself, without app.py
    page.get_by_text("You do not have access to this screen").wait_for()
    assert page.get_by_test_id("stSidebarNav").count() == 0 and page.get_by_role("heading").count() == 0
    page.goto(url)
    page.get_by_role("heading", name="Welcome to MICS Studio").wait_for()
    assert page.get_by_test_id("stSidebarNav").count() == 0 and page.get_by_text("None", exact=True).count() == 0
    page.get_by_label("User name").fill("dr.kim")
    page.get_by_label("Password (at least 8 characters)").fill("a long password")
    page.get_by_label("Repeat the password").fill("a long password")
    shot(page, "01-first-run")
    page.get_by_role("button", name="Create administrator").click()

    page.get_by_role("heading", name="Overview").wait_for()
    shot(page, "02-empty-overview")
    page.get_by_role("button", name=re.compile("Load the demo data")).click()
    page.get_by_text(f"Cases 1–{DEMO_PAIRS} of {DEMO_PAIRS}").wait_for(timeout=180_000)
    shot(page, "03-overview")

    truth = pd.read_csv(data / "demo" / "manifest.csv").set_index("case_id")["label"]
    open_screen(page, "Label")
    with sqlite3.connect(data.parent / "mics.db") as connection:
        order = [row[0] for row in connection.execute("SELECT name FROM label_classes ORDER BY position")]
    shot(page, "04-label")
    labelled = []
    for _ in range(LABELLED):
        case = current_case(page)
        page.locator("body").press(str(order.index(truth[case]) + 1))
        page.wait_for_function("c => !document.body.innerText.includes('Case ' + c + '\\n')", arg=case, timeout=30_000)
        wait_idle(page)
        labelled.append(case)
    page.locator("body").press("u")  # undo the last label: back on that case
    page.get_by_role("heading", name=f"Case {labelled[-1]}").wait_for()
    wait_idle(page)
    page.locator("body").press(str(order.index(truth[labelled[-1]]) + 1))
    page.get_by_role("heading", name=f"Case {labelled[-1]}").wait_for(state="detached")
    wait_idle(page)
    assert page.get_by_text(f"{LABELLED} of {DEMO_PAIRS} cases labelled").is_visible()

    open_screen(page, "Train")
    page.get_by_role("button", name="Retrain").click()
    # the job followed may still be the prepare job the demo import queued
    page.get_by_text(re.compile(r"Job \d+ \((retrain|prepare)\) · (queued|running)")).wait_for()
    shot(page, "05-train-running")
    page.get_by_text(re.compile(r"Job \d+ \(retrain\) · succeeded")).wait_for(timeout=300_000)
    wait_idle(page)
    shot(page, "06-train-done")

    open_screen(page, "Review")
    first = current_case(page)
    shot(page, "07-review")
    page.locator("body").press("a")
    page.get_by_role("heading", name=f"Case {first}").wait_for(state="detached")
    wait_idle(page)
    second = current_case(page)
    page.locator("body").press("2")
    page.get_by_role("heading", name=f"Case {second}").wait_for(state="detached")
    wait_idle(page)

    open_screen(page, "Explore")
    plot = page.locator(".nsewdrag").first
    plot.wait_for()
    box = plot.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=10)
    page.mouse.move(box["x"] + box["width"] - 5, box["y"] + box["height"] - 5, steps=10)
    page.mouse.up()
    page.get_by_text(re.compile(r"\d+ case\(s\) selected")).wait_for()
    wait_idle(page)
    shot(page, "08-explore")
    page.get_by_role("button", name="Send to the Label queue").click()
    page.get_by_text(re.compile("selected in Explore")).wait_for()

    open_screen(page, "Model quality")
    shot(page, "09-model-quality")

    open_screen(page, "Export")
    shot(page, "10-export")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = pd.read_csv(io.BytesIO(Path(download.value.path()).read_bytes()), encoding="utf-8-sig")
    assert len(rows) == DEMO_PAIRS
    labels = rows.set_index("case_id")["label"].dropna()
    assert LABELLED <= len(labels) <= LABELLED + 2  # the keyboard labels, and the two reviewed cases
    assert (labels.reindex(labelled) == truth[labelled]).sum() >= LABELLED - 2
    assert set(rows["labelled_by"].dropna()) == {"dr.kim"}
    assert rows["predicted_label"].notna().all()

    open_screen(page, "Admin")
    shot(page, "11-admin")

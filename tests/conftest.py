"""Fixtures shared by the suite.

`db_url` runs a test once on SQLite and once on PostgreSQL (127.0.0.1:5432, database
`test`, a schema of its own that is dropped afterwards). When PostgreSQL is unreachable
those runs skip with the reason, unless MICS_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from mics_core.config import Settings
from mics_core.db import Database, init_db

PG_ADMIN_URL = os.environ.get("MICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_unavailable() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # any failure to connect means "not here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def postgres_reason() -> str | None:
    return _postgres_unavailable()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_reason: str | None) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mics.db'}"
        return
    if postgres_reason:
        if os.environ.get("MICS_REQUIRE_POSTGRES") == "1":
            pytest.fail(postgres_reason)
        pytest.skip(postgres_reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        from mics_core.db import connect

        connect(f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}").engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db_url=db_url, data_root=tmp_path / "data")


@pytest.fixture
def db(settings: Settings) -> Database:
    return init_db(settings.db_url)


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (24, 20), fmt: str | None = None) -> Path:
    """A small noise image, unique per seed, in the format the suffix (or `fmt`) names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


CLASSES = ["normal", "polyp", "ulcer"]


def make_project(db: Database, settings: Settings, tmp_path: Path, cases: int = 12, labelled: int = 6) -> list[int]:
    """`cases` imported pairs (WLI only, so NBI is computed) and the first `labelled` labelled
    round-robin; returns the case ids in import order."""
    from sqlalchemy import select

    from mics_core.db.models import Case
    from mics_core.ingest.importer import import_source
    from mics_core.labels import add_classes, annotate

    for i in range(cases):
        write_image(tmp_path / "src" / "WLI" / f"case{i:02d}.png", i, size=(32, 32))
    import_source(tmp_path / "src", db, settings)
    with db.session() as session:
        add_classes(session, CLASSES)
        ids = list(session.scalars(select(Case.id).order_by(Case.id)))
        for n, case_id in enumerate(ids[:labelled]):
            annotate(session, case_id, CLASSES[n % 3], source="manual")
    return ids


def add_model(db: Database, probs: list[list[float]], uncertainty: list[float], **columns: list) -> int:
    """A registered, active model version with constructed predictions for the cases in id
    order (one row of `probs` per case); extra per-case prediction columns via `columns`."""
    from sqlalchemy import select

    from mics_core.db.models import Case, ModelVersion, Prediction
    from mics_core.labels import class_ids, label_snapshot
    from mics_core.registry import activate

    rng = np.random.default_rng(0)
    with db.session() as session:
        ids = class_ids(session)
        case_ids = list(session.scalars(select(Case.id).order_by(Case.id)))[: len(probs)]
        held_out = {
            "target": [0, 1, 2, 0, 1, 2],
            "probs": [
                [0.8, 0.1, 0.1],
                [0.2, 0.7, 0.1],
                [0.1, 0.2, 0.7],
                [0.3, 0.6, 0.1],
                [0.1, 0.8, 0.1],
                [0.2, 0.2, 0.6],
            ],
            "probs_before_scaling": [[0.9, 0.05, 0.05], [0.1, 0.85, 0.05]] + [[0.05, 0.05, 0.9]] * 4,
            "confidence": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        }
        metrics = {"n": 6, "accuracy": 0.833, "macro_f1": 0.82, "ece": 0.05, "ece_before_scaling": 0.12, "aurc": 0.1}
        metrics |= {"per_class_recall": dict.fromkeys(CLASSES, 0.8), "auc": 0.9, "brier": 0.2, "held_out": held_out}
        version = ModelVersion(
            kind="mics",
            checkpoint_path="models/none.safetensors",
            class_names=CLASSES,
            metrics=metrics,
            label_snapshot=label_snapshot(session),
            n_labels=6,
        )
        session.add(version)
        session.flush()
        for i, (case_id, p) in enumerate(zip(case_ids, probs, strict=True)):
            order = np.argsort(p)
            extra = {name: values[i] for name, values in columns.items()}
            session.add(
                Prediction(
                    model_version_id=version.id,
                    case_id=case_id,
                    label_id=ids[CLASSES[int(order[-1])]],
                    probability=float(p[order[-1]]),
                    margin=float(p[order[-1]] - p[order[-2]]),
                    probs=list(p),
                    uncertainty=uncertainty[i],
                    uncertainty_wli=extra.pop("uncertainty_wli", uncertainty[i]),
                    uncertainty_nbi=extra.pop("uncertainty_nbi", uncertainty[i]),
                    conflict=extra.pop("conflict", 0.0),
                    wli_label_id=ids[CLASSES[extra.pop("wli", int(order[-1]))]],
                    nbi_label_id=ids[CLASSES[extra.pop("nbi", int(order[-1]))]],
                    embedding=rng.normal(size=8).astype(np.float16).tobytes(),
                    umap_x=float(rng.normal()),
                    umap_y=float(rng.normal()),
                )
            )
        activate(session, version.id)
        return version.id


def add_user(session, username: str, role: str = "annotator"):
    """An account row without a password (it cannot sign in), for tests of who labelled what."""
    from mics_core.db.models import User

    user = User(username=username, role=role)
    session.add(user)
    session.flush()
    return user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, timeout: float = 60) -> None:
    """Until the Streamlit server at `url` answers its health check."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                assert response.read() == b"ok"
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the Streamlit server did not come up within {timeout:.0f} s") from None
            time.sleep(0.5)

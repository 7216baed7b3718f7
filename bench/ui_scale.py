"""What the screens' queries cost on a 10,000-case project, against loading everything.

Builds a synthetic project in the database (10,000 cases, 10 % labelled, a model version
with a prediction, embedding and UMAP point per case; image rows only, no files), then
times each query a screen runs per click, median of 5, next to the plain baseline of
reading every prediction row into pandas and sorting there.

    python -m bench.ui_scale [--cases 10000] [--db URL]   (default: a scratch SQLite file)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import make_url

from mics_core.browse import case_order, case_table, case_view
from mics_core.config import Settings
from mics_core.db import init_db
from mics_core.db.models import Annotation, Case, Image, ImportBatch, ModelVersion, Prediction
from mics_core.embed import projection_frame
from mics_core.export import cases_frame
from mics_core.labels import add_classes, class_ids
from mics_core.review import Filters, corrections_by_uncertainty, rank
from mics_core.stats import dataset_stats
from mics_core.store import ImageStore

CLASSES = ["normal", "polyp", "ulcerative-colitis", "esophagitis"]


def build(db, cases: int) -> int:
    rng = np.random.default_rng(0)
    with db.session() as session:
        add_classes(session, CLASSES)
        ids = [class_ids(session)[c] for c in CLASSES]
        batch = ImportBatch(source="scale benchmark")
        session.add(batch)
        session.flush()
        images = [
            {
                "sha256": f"{i:064x}",
                "modality": "wli",
                "path": f"store/x/{i}.png",
                "thumb_path": f"thumbs/x/{i}.jpg",
                "original_name": f"{i}.png",
                "format": "PNG",
                "width": 256,
                "height": 256,
                "size_bytes": 1,
            }
            for i in range(cases)
        ]
        session.execute(insert(Image), images)
        image_ids = list(session.scalars(select(Image.id).order_by(Image.id)))
        session.execute(
            insert(Case),
            [
                {"case_key": f"case-{i:05d}", "wli_image_id": image_ids[i], "source": "bench", "batch_id": batch.id}
                for i in range(cases)
            ],
        )
        case_ids = list(session.scalars(select(Case.id).order_by(Case.id)))
        labelled = rng.choice(cases, cases // 10, replace=False)
        session.execute(
            insert(Annotation),
            [{"case_id": case_ids[i], "label_id": ids[i % 4], "source": "manual"} for i in labelled],
        )
        version = ModelVersion(kind="mics", checkpoint_path="-", class_names=CLASSES, active=True)
        session.add(version)
        session.flush()
        probs = rng.dirichlet(np.ones(4), cases)
        rows = []
        for i, case_id in enumerate(case_ids):
            top = np.sort(probs[i])
            rows.append(
                {
                    "model_version_id": version.id,
                    "case_id": case_id,
                    "label_id": ids[int(probs[i].argmax())],
                    "probability": float(top[-1]),
                    "margin": float(top[-1] - top[-2]),
                    "probs": probs[i].round(4).tolist(),
                    "uncertainty": float(rng.random()),
                    "uncertainty_wli": float(rng.random()),
                    "uncertainty_nbi": float(rng.random()),
                    "conflict": float(rng.random()),
                    "wli_label_id": ids[int(rng.integers(4))],
                    "nbi_label_id": ids[int(rng.integers(4))],
                    "embedding": rng.normal(size=128).astype(np.float16).tobytes(),
                    "umap_x": float(rng.normal()),
                    "umap_y": float(rng.normal()),
                }
            )
        session.execute(insert(Prediction), rows)
        return case_ids[cases // 2]


def load_everything(session) -> pd.DataFrame:
    """The plain baseline: every prediction row into pandas, ranked there."""
    frame = pd.read_sql(select(Prediction), session.connection())
    return frame.sort_values(["uncertainty", "case_id"], ascending=[False, True]).head(50)


@contextmanager
def scratch_schema(url: str | None) -> Iterator[str | None]:
    """On PostgreSQL, a schema of its own that is dropped afterwards (never the public one)."""
    if url is None or make_url(url).get_backend_name() == "sqlite":
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def timed(call: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--db", help="database URL (default: a scratch SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_schema(args.db) as url:
        db = init_db(url or f"sqlite:///{tmp}/scale.db")
        started = time.perf_counter()
        middle = build(db, args.cases)
        seconds = time.perf_counter() - started
        print(f"built {args.cases:,} cases with predictions in {seconds:.1f} s ({db.engine.dialect.name})")
        store = ImageStore(Settings(data_root=Path(tmp)))
        with db.session() as s:
            checks = {
                "sidebar counts (dataset_stats)": lambda: dataset_stats(s),
                "Label: queue order, unlabelled first": lambda: case_order(s, "unlabelled first"),
                "Label: one case (images, history, prediction)": lambda: case_view(s, store, middle),
                "Overview: one page of 50 cases": lambda: case_table(s, offset=5000, limit=50),
                "Review: top 50 by uncertainty": lambda: rank(s, "uncertainty", 50),
                "Review: top 50 by disagreement, unlabelled": lambda: rank(
                    s, "disagreement", 50, Filters(unlabelled_only=True)
                ),
                "Review: corrections by band": lambda: corrections_by_uncertainty(s),
                "Explore: projection of every case": lambda: projection_frame(s, 1),
                "Export: every case": lambda: cases_frame(s),
            }
            baseline = timed(lambda: load_everything(s))
            print(f"\n| query ({args.cases:,} cases) | median ms | vs loading every prediction |\n|---|---|---|")
            for name, call in checks.items():
                ms = timed(call)
                print(f"| {name} | {ms:.1f} | {ms / baseline:.2f}× |")
            print(f"| *baseline: every prediction row into pandas, sorted there* | {baseline:.1f} | 1.00× |")


if __name__ == "__main__":
    main()

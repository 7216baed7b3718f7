"""End-to-end on the demo data, as a clinician waits for it. Import, then the prepare job that
the import queues (encoders and every case's features, in the background: import → encoders
ready); then labels saved → new predictions visible, twice (the second after 20 more
labels: the everyday case). A real worker process runs each job; this script watches the
job row and times each phase.

    python -m bench.retrain_e2e [--pairs 600] [--fraction 0.05]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from mics_core.config import Settings
from mics_core.db import init_db
from mics_core.db.models import Case, Job, JobKind, JobStatus
from mics_core.evaluation.demo import CLASSES, generate
from mics_core.ingest.importer import import_source
from mics_core.jobs.queue import enqueue, request_retrain
from mics_core.labels import add_classes, annotate

ROOT = Path(__file__).resolve().parents[1]


def label(db, truth: pd.DataFrame, case_keys: list[str]) -> None:
    with db.session() as session:
        ids = dict(session.execute(sa.select(Case.case_key, Case.id)).all())
        for key in case_keys:
            annotate(session, ids[key], truth.loc[key, "label"], source="manual")


def timed_job(db, settings: Settings, kind: str = JobKind.RETRAIN) -> dict[str, float]:
    """Queue a job (or take the one queued), run one worker process, and time the phases from the job row."""
    with db.session() as session:
        queued = session.scalar(sa.select(Job.id).where(Job.kind == kind, Job.status == JobStatus.QUEUED))
        job_id = queued or (request_retrain(session).id if kind == JobKind.RETRAIN else enqueue(session, kind).id)
    env = {
        **os.environ,
        "MICS_DB_URL": settings.db_url,
        "MICS_DATA_ROOT": str(settings.data_root),
        "PYTHONPATH": str(ROOT),
    }
    start = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "-m", "mics_core", "worker", "--once"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    seen: dict[str, float] = {"worker start": 0.0}
    status = "queued"
    while status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.25)
        with db.session() as session:
            job = session.get(Job, job_id)
            status, phase = job.status, job.phase
        if status == "running" and "load labels" not in seen:
            seen["load labels"] = time.perf_counter() - start
        if phase and phase not in seen:
            seen[phase] = time.perf_counter() - start
    seen["done"] = time.perf_counter() - start
    worker.wait()
    if status != "succeeded":
        raise SystemExit(f"retrain {status}: {job.error}")
    marks = sorted(seen.items(), key=lambda item: item[1])
    return {name: later - at for (name, at), (_, later) in pairwise(marks)} | {"total": seen["done"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--fraction", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(db_url=f"sqlite:///{root / 'mics.db'}", data_root=root / "data")
        db = init_db(settings.db_url)
        manifest = generate(root / "demo", pairs=args.pairs)
        truth = pd.read_csv(manifest, index_col="case_id")
        with db.session() as session:
            add_classes(session, list(CLASSES))
        import_source(manifest, db, settings, use_labels=False)
        first = truth.groupby("label").sample(frac=args.fraction, random_state=0).index.tolist()
        label(db, truth, first)
        rows = {f"prepare job after importing {args.pairs} pairs": timed_job(db, settings, JobKind.PREPARE)}
        rows[f"first retrain ({len(first)} labels)"] = timed_job(db, settings)
        more = truth.drop(index=first).groupby("label").sample(n=5, random_state=1).index.tolist()
        label(db, truth, more)
        rows[f"second retrain (+{len(more)} labels)"] = timed_job(db, settings)
    phases = ["worker start", "load labels", "pretrain", "features", "finetune", "predict", "umap", "total"]
    print("| retrain | " + " | ".join(phases) + " |")
    print("|---" * (len(phases) + 1) + "|")
    for name, times in rows.items():
        print(f"| {name} | " + " | ".join(f"{times[p]:.1f} s" if p in times else "—" for p in phases) + " |")


if __name__ == "__main__":
    main()

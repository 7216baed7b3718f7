"""First-run setup: the database schema and, on an empty database, the demo data."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mics_core.config import Settings
from mics_core.db import init_db
from mics_core.db.models import Case, ImportBatch
from mics_core.evaluation.demo import CLASSES, generate
from mics_core.ingest.importer import import_source
from mics_core.labels import add_classes

# the import batch name of the demo data: how a project knows it holds rendered images, not patients
DEMO_SOURCE = "synthetic demo data"


def holds_demo_data(session: Session) -> bool:
    return session.scalar(select(ImportBatch.id).where(ImportBatch.source == DEMO_SOURCE).limit(1)) is not None


def ensure_database(settings: Settings, demo_pairs: int = 0) -> str:
    """Upgrade the schema; with `demo_pairs`, fill an empty database with the demo data.

    The demo is imported without its labels (the clinician labels it in the app); its
    manifest keeps the ground truth for benchmarks.
    """
    db = init_db(settings.db_url)
    with db.session() as session:
        cases = session.scalar(select(func.count()).select_from(Case))
    if cases or not demo_pairs:
        return f"database ready: {cases} case(s)"
    manifest = settings.demo_root / "manifest.csv"
    if not manifest.exists():
        generate(settings.demo_root, pairs=demo_pairs)
    with db.session() as session:
        add_classes(session, list(CLASSES))
    report = import_source(manifest, db, settings, use_labels=False, display_name=DEMO_SOURCE)
    return f"database ready with the synthetic demo data: {report.summary()}"

"""First-run setup: the database schema and, on an empty database, the demo data."""

from __future__ import annotations

from sqlalchemy import func, select

from mics_core.config import Settings
from mics_core.db import init_db
from mics_core.db.models import Case
from mics_core.evaluation.demo import CLASSES, generate
from mics_core.ingest.importer import import_source
from mics_core.labels import add_classes


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
    report = import_source(manifest, db, settings, use_labels=False, display_name="synthetic demo data")
    return f"database ready with the synthetic demo data: {report.summary()}"

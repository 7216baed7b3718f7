"""Importing a source into the store and the database, one transaction per batch.

Each case is checked on its own (images decode fully, are within the pixel limit, are
not already another case); a bad case gets a report line and is skipped, the rest
imports. Files are written to the content-addressed store first and the database rows
in one transaction afterwards, so a crash leaves no half-imported case (at worst an
unreferenced file in the store).

Imports run one at a time: images are decoded in parallel, but "which of these cases and
files are new?" and the writing happen under the import lock (a file lock under the data
root, and a database lock for importers on other hosts), so a second import of the same
files waits for the first and then finds them already there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from sqlalchemy import false, select, text, update
from sqlalchemy.orm import Session

from mics_core.config import Settings
from mics_core.db import Database
from mics_core.db.models import Case, Image, ImportBatch
from mics_core.imaging import (
    BadImageError,
    CheckedImage,
    check_image,
    check_image_file,
    computed_view,
    make_thumbnail,
)
from mics_core.ingest.archive import unpacked_zip
from mics_core.ingest.sources import CaseSpec, Problem, check_case_key, discover, read_csv_text
from mics_core.jobs.queue import request_prepare
from mics_core.labels import add_classes, annotate, class_ids, class_names, current_labels
from mics_core.store import ImageStore, file_lock

# Any constant, different from other features' keys: PostgreSQL's transaction-scoped lock
# that serialises imports (ASCII "MIMP").
_IMPORT_LOCK_KEY = 0x4D494D50


@dataclass
class ImportReport:
    """What an import did: new cases, cases already present, labels added, and skipped items."""

    source: str
    batch_id: int | None = None
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    labels_added: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False only when nothing in the source could be imported or was already there."""
        return bool(self.imported or self.unchanged)

    def problems_frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.as_row() for p in self.problems], columns=["case_id", "file", "reason"])

    def summary(self) -> str:
        parts = [f"{len(self.imported)} new case(s) imported"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} already present")
        if self.labels_added:
            parts.append(f"{self.labels_added} label(s) recorded")
        parts.append(f"{len(self.problems)} item(s) skipped")
        return ", ".join(parts)


@dataclass
class _Ready:
    """A case whose files passed every check, ready to be written."""

    spec: CaseSpec
    wli: CheckedImage
    nbi: CheckedImage | None


@contextmanager
def _opened(source: Path, settings: Settings, name: str) -> Iterator[tuple[Path, list[Problem]]]:
    if source.is_file() and source.suffix.lower() == ".zip":
        workdir = Path(settings.data_root) / "incoming"
        with unpacked_zip(
            source,
            settings.max_unzipped_bytes,
            settings.max_zip_entries,
            workdir=workdir,
            name=name,
            max_ratio=settings.max_zip_ratio,
        ) as opened:
            yield opened
    else:
        with nullcontext((source, [])) as opened:
            yield opened


def read_labels_csv(path: Path) -> tuple[dict[str, str], list[Problem]]:
    """A `case_id,label` CSV as a dict; rows without a usable id or label become problems."""
    frame = read_csv_text(path, ("case_id", "label"), ("case_id", "label"))
    labels: dict[str, str] = {}
    problems = []
    for number, row in enumerate(frame.to_dict("records"), start=2):
        reason = check_case_key(row["case_id"]) or (None if row["label"] else "the label is empty")
        if reason is None and row["case_id"] in labels:
            reason = "the case id appears more than once in the labels file"
        if reason:
            problems.append(Problem(row["case_id"], f"{path.name} line {number}", reason))
        else:
            labels[row["case_id"]] = row["label"]
    return labels, problems


def import_source(
    source: Path,
    db: Database,
    settings: Settings,
    *,
    labels_csv: Path | None = None,
    use_labels: bool = True,
    user_id: int | None = None,
    display_name: str | None = None,
) -> ImportReport:
    """Import a manifest CSV, a folder or a zip; see `ImportReport` for the outcome.

    Raises:
        SourceError: the source as a whole is unusable (missing columns, unknown layout,
            not a zip); nothing was imported.
    """
    source = Path(source)
    report = ImportReport(display_name or source.name)
    extra_labels, label_problems = read_labels_csv(labels_csv) if labels_csv else ({}, [])
    report.problems += label_problems
    with _opened(source, settings, report.source) as (root, zip_problems):
        report.problems += zip_problems
        specs, problems = discover(root, report.source)
        report.problems += problems
        if not use_labels:
            specs = [replace(s, label=None) for s in specs]
        specs = [_with_label(s, extra_labels.pop(s.case_key, None)) for s in specs]
        loaded = {spec.case_key: _load_case(spec, settings) for spec in specs}
        with file_lock(Path(settings.data_root) / "import.lock"), db.session() as session:
            _lock_imports(session)
            classes = _class_list(session, specs, report)
            ready = _check_cases(session, specs, loaded, classes, report)
            _note_scaled(ready, report)
            _write(session, ready, ImageStore(settings), settings, report, user_id)
            _label_existing(session, extra_labels, specs, classes, report, user_id)
            if report.imported:  # encoders and features of the new cases, before anyone presses Retrain
                request_prepare(session, user_id)
    return report


def _lock_imports(session: Session) -> None:
    """Hold the database's import lock until the transaction ends (for importers on other
    hosts that share a PostgreSQL database; on one host the file lock already waited).

    SQLite: a write that changes nothing, which takes the single write lock before the
    checks read, so what they find new is still new when the rows are inserted."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _IMPORT_LOCK_KEY})
    else:
        session.execute(update(ImportBatch).where(false()).values(source=ImportBatch.source))


def _note_scaled(ready: list[_Ready], report: ImportReport) -> None:
    """Say so when images were scaled from 16 or 32 bits to 8: the stored picture is not the file's pixels."""
    scaled = [img.scaled_from for item in ready for img in (item.wli, item.nbi) if img and img.scaled_from]
    if scaled:
        depths = " or ".join(sorted(set(scaled)))
        report.notes.append(
            f"{len(scaled)} image(s) with {depths} pixels were scaled to 8 bits, each by its own range of values"
        )


def _with_label(spec: CaseSpec, label: str | None) -> CaseSpec:
    return spec if label is None else replace(spec, label=label)


def _class_list(session: Session, specs: list[CaseSpec], report: ImportReport) -> set[str]:
    """The project's classes; a project without any adopts the classes of its first import."""
    names = class_names(session)
    if not names:
        found = sorted({s.label for s in specs if s.label})
        if found:
            add_classes(session, found)
            report.notes.append(f"class list set from this import: {', '.join(found)}")
            names = found
    return set(names)


def _load_case(spec: CaseSpec, settings: Settings) -> tuple[CheckedImage, CheckedImage | None] | _CaseFileError:
    """The case's decoded images, or the error that makes it unusable (reported later, in order)."""
    try:
        return _load(spec.wli, settings), _load(spec.nbi, settings) if spec.nbi else None
    except _CaseFileError as err:
        return err


def _check_cases(
    session: Session,
    specs: list[CaseSpec],
    loaded: dict[str, tuple[CheckedImage, CheckedImage | None] | _CaseFileError],
    classes: set[str],
    report: ImportReport,
) -> list[_Ready]:
    existing = {
        c.case_key: c for c in session.scalars(select(Case).where(Case.case_key.in_([s.case_key for s in specs])))
    }
    known_hashes = _case_of_hash(session)
    this_import: set[str] = set()
    ready: list[_Ready] = []
    for spec in specs:
        if spec.label and spec.label not in classes:
            report.problems.append(
                Problem(
                    spec.case_key, "", f"unknown class {spec.label!r} (the classes are: {', '.join(sorted(classes))})"
                )
            )
            continue
        images = loaded[spec.case_key]
        if isinstance(images, _CaseFileError):
            report.problems.append(Problem(spec.case_key, images.file, images.reason))
            continue
        wli, nbi = images
        if spec.case_key in existing:
            _compare_existing(existing[spec.case_key], wli, nbi, spec, report)
            continue
        if duplicate := _duplicate(spec, wli, nbi, known_hashes, this_import):
            report.problems.append(Problem(spec.case_key, *duplicate))
            continue
        for img in (wli, nbi):
            if img:
                known_hashes[img.sha256] = spec.case_key
        this_import.add(spec.case_key)
        ready.append(_Ready(spec, wli, nbi))
    return ready


def _duplicate(
    spec: CaseSpec, wli: CheckedImage, nbi: CheckedImage | None, known_hashes: dict[str, str], this_import: set[str]
) -> tuple[str, str] | None:
    """(file, reason) when a new case's images are already in use (by itself or another case), else None."""
    if nbi is not None and nbi.sha256 == wli.sha256:
        reason = "the WLI and NBI images are the same file; give the case its real NBI image, or leave NBI out"
        return spec.wli.name, reason + " to have one computed"
    for img, path, modality in ((wli, spec.wli, "WLI"), (nbi, spec.nbi, "NBI")):
        if img is not None and img.sha256 in known_hashes:
            other = known_hashes[img.sha256]
            where = " earlier in this import" if other in this_import else ""
            return path.name, f"the {modality} image is the same file as an image of case {other!r}{where}"
    return None


class _CaseFileError(Exception):
    def __init__(self, file: str, reason: str) -> None:
        self.file, self.reason = file, reason


def _load(path: Path, settings: Settings) -> CheckedImage:
    """Check the file's size and the pixel count its header declares before reading it whole."""
    try:
        check_image_file(path, settings.max_image_pixels)
        return check_image(path.read_bytes(), path.name, settings.max_image_pixels)
    except BadImageError as err:
        raise _CaseFileError(path.name, str(err)) from None
    except OSError:
        raise _CaseFileError(path.name, "the file could not be read") from None


def _case_of_hash(session: Session) -> dict[str, str]:
    """`{sha256: case key}` for every image already in a case."""
    rows = session.execute(
        select(Image.sha256, Case.case_key).join(
            Case, (Case.wli_image_id == Image.id) | (Case.nbi_image_id == Image.id)
        )
    )
    return dict(rows.all())


def _compare_existing(
    case: Case, wli: CheckedImage, nbi: CheckedImage | None, spec: CaseSpec, report: ImportReport
) -> None:
    same_wli = case.wli is not None and case.wli.sha256 == wli.sha256
    same_nbi = (nbi is None and (case.nbi is None or case.nbi.computed)) or (
        nbi is not None and case.nbi is not None and case.nbi.sha256 == nbi.sha256
    )
    if same_wli and same_nbi:
        report.unchanged.append(spec.case_key)
    else:
        report.problems.append(
            Problem(spec.case_key, spec.wli.name, "a case with this id already exists with different images")
        )


def _store_image(
    store: ImageStore, settings: Settings, img: CheckedImage, modality: str, name: str, computed: bool
) -> Image:
    suffix = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp"}[img.format]
    digest, rel = store.put(img.data, "images", suffix, sha256=img.sha256)
    _, thumb = store.put(make_thumbnail(img.rgb, settings.thumbnail_size), "thumbs", ".jpg")
    return Image(
        sha256=digest,
        modality=modality,
        computed=computed,
        path=rel,
        thumb_path=thumb,
        original_name=name[:255],
        format=img.format,
        width=img.width,
        height=img.height,
        size_bytes=len(img.data),
    )


def _write(
    session: Session,
    ready: list[_Ready],
    store: ImageStore,
    settings: Settings,
    report: ImportReport,
    user_id: int | None,
) -> None:
    if not ready:
        return
    batch = ImportBatch(source=report.source[:2000], user_id=user_id)
    session.add(batch)
    session.flush()
    for item in ready:
        wli = _store_image(store, settings, item.wli, "wli", item.spec.wli.name, computed=False)
        if item.nbi is not None:
            nbi = _store_image(store, settings, item.nbi, "nbi", item.spec.nbi.name, computed=False)
        else:
            computed = computed_view(item.wli.rgb)
            nbi = session.scalar(select(Image).where(Image.sha256 == computed.sha256)) or _store_image(
                store, settings, computed, "nbi", f"computed from {item.spec.wli.name}", computed=True
            )
        case = Case(
            case_key=item.spec.case_key,
            wli=wli,
            nbi=nbi,
            source=report.source[:2000],
            batch_id=batch.id,
            split=item.spec.split,
        )
        session.add(case)
        session.flush()
        if item.spec.label:
            annotate(session, case.id, item.spec.label, source="import", user_id=user_id)
            report.labels_added += 1
        report.imported.append(item.spec.case_key)
    batch.n_imported = len(report.imported)
    batch.n_skipped = len(report.problems)
    batch.report = {"problems": [p.as_row() for p in report.problems], "notes": report.notes}
    report.batch_id = batch.id


def _label_existing(
    session: Session,
    extra_labels: dict[str, str],
    specs: list[CaseSpec],
    classes: set[str],
    report: ImportReport,
    user_id: int | None,
) -> None:
    """Labels for cases already in the database: recorded only where the case has none."""
    wanted = {s.case_key: s.label for s in specs if s.label and s.case_key in report.unchanged}
    wanted.update(extra_labels)
    if not wanted:
        return
    cases = dict(session.execute(select(Case.case_key, Case.id).where(Case.case_key.in_(list(wanted)))).all())
    current = current_labels(session)
    names = {v: k for k, v in class_ids(session).items()}
    for case_key, label in wanted.items():
        if case_key not in cases:
            report.problems.append(Problem(case_key, "", "no case with this id; the label was not recorded"))
        elif label not in classes:
            report.problems.append(Problem(case_key, "", f"unknown class {label!r}"))
        elif cases[case_key] not in current:
            annotate(session, cases[case_key], label, source="import", user_id=user_id)
            report.labels_added += 1
        elif names[current[cases[case_key]]] != label:
            report.problems.append(
                Problem(
                    case_key,
                    "",
                    f"the import says {label!r} but the case is labelled "
                    f"{names[current[cases[case_key]]]!r}; the existing label was kept",
                )
            )

"""Import: every accepted layout, every kind of bad input, idempotency, atomicity."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image as PILImage

from mics_core.db.models import Annotation, Case, Image, ImportBatch
from mics_core.ingest import importer
from mics_core.ingest.importer import import_source
from mics_core.ingest.sources import SourceError
from mics_core.labels import add_classes, annotate, class_names, current_labels
from tests.conftest import write_image


def _cases(db) -> dict[str, Case]:
    with db.session() as session:
        cases = session.scalars(sa.select(Case)).all()
        return {c.case_key: (c.wli and c.wli.modality, c.nbi and c.nbi.computed, c.split) for c in cases}


def _labels(db) -> dict[str, str]:
    with db.session() as session:
        names = dict(session.execute(sa.text("SELECT id, name FROM label_classes")).all())
        keys = dict(session.execute(sa.select(Case.id, Case.case_key)).all())
        return {keys[c]: names[label] for c, label in current_labels(session).items()}


def _reasons(report) -> dict[str, str]:
    return {p.case_key or p.file: p.reason for p in report.problems}


def make_manifest(root: Path, rows: list[str], header: str = "case_id,wli_path,nbi_path,label,split") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "manifest.csv"


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(3):
        write_image(src / "img" / f"w{i}.png", seed=i)
        write_image(src / "img" / f"n{i}.jpg", seed=100 + i)
    make_manifest(
        src,
        [
            "a,img/w0.png,img/n0.jpg,polyp,train",
            "b,img/w1.png,img/n1.jpg,normal,test",
            "c,img/w2.png,,,",
        ],
    )
    return src


# --- accepted layouts ----------------------------------------------------------------


def test_manifest_imports_pairs_labels_and_splits(manifest_dir, db, settings):
    report = import_source(manifest_dir / "manifest.csv", db, settings)
    assert report.ok and sorted(report.imported) == ["a", "b", "c"] and not report.problems
    assert _cases(db) == {"a": ("wli", False, "train"), "b": ("wli", False, "test"), "c": ("wli", True, None)}
    assert _labels(db) == {"a": "polyp", "b": "normal"}
    with db.session() as session:
        assert session.scalars(sa.select(Annotation.source)).all() == ["import", "import"]
        assert class_names(session) == ["normal", "polyp"]


def test_images_are_stored_by_content_with_thumbnails_and_dimensions(manifest_dir, db, settings):
    import_source(manifest_dir / "manifest.csv", db, settings)
    with db.session() as session:
        image = session.scalars(sa.select(Image).where(Image.original_name == "w0.png")).one()
    stored = settings.data_root / image.path
    assert stored.read_bytes() == (manifest_dir / "img" / "w0.png").read_bytes()
    assert image.sha256 in image.path and not Path(image.path).is_absolute()
    assert (image.width, image.height, image.format) == (24, 20, "PNG")
    assert PILImage.open(settings.data_root / image.thumb_path).format == "JPEG"


def test_folder_layout_with_class_folders(tmp_path, db, settings):
    src = tmp_path / "folder"
    write_image(src / "WLI" / "polyp" / "p1.png", 1)
    write_image(src / "NBI" / "polyp" / "p1.png", 2)
    write_image(src / "WLI" / "normal" / "n1.jpg", 3)
    report = import_source(src, db, settings)
    assert sorted(report.imported) == ["normal/n1", "polyp/p1"]
    assert _cases(db)["polyp/p1"] == ("wli", False, None)
    assert _cases(db)["normal/n1"] == ("wli", True, None)
    assert _labels(db) == {"polyp/p1": "polyp", "normal/n1": "normal"}


def test_folder_layout_without_class_folders_imports_unlabelled(tmp_path, db, settings):
    src = tmp_path / "folder"
    for i, ext in enumerate(["png", "jpg", "tif", "bmp"]):
        write_image(src / "WLI" / f"case{i}.{ext}", i)
        write_image(src / "nbi" / f"case{i}.png", 10 + i)
    report = import_source(src, db, settings)
    assert sorted(report.imported) == ["case0", "case1", "case2", "case3"] and not report.problems
    assert all(not computed for _, computed, _ in _cases(db).values())
    assert _labels(db) == {}


def test_authors_layout_pairs_by_file_name_within_each_class(tmp_path, db, settings):
    src = tmp_path / "authors"
    for cls in ("polyp", "esophagitis"):
        for i in range(2):
            write_image(src / f"{cls}_WLI" / f"{i}.jpg", hash((cls, i)) % 1000)
            write_image(src / f"{cls}_NBI" / f"{i}.jpg", hash((cls, i, "n")) % 1000 + 1000)
    report = import_source(src, db, settings)
    assert sorted(report.imported) == ["esophagitis/0", "esophagitis/1", "polyp/0", "polyp/1"]
    assert _labels(db)["polyp/1"] == "polyp"
    assert not any(computed for _, computed, _ in _cases(db).values())


@pytest.mark.parametrize("layout", ["manifest", "folder", "authors"])
def test_zip_of_each_layout(tmp_path, db, settings, layout):
    src = tmp_path / "inside"
    if layout == "manifest":
        write_image(src / "w.png", 1)
        make_manifest(src, ["z1,w.png,,,"])
    elif layout == "folder":
        write_image(src / "WLI" / "z1.png", 1)
    else:
        write_image(src / "polyp_WLI" / "z1.png", 1)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in src.rglob("*"):
            zf.write(path, Path("export_folder") / path.relative_to(src))
    report = import_source(archive, db, settings)
    assert len(report.imported) == 1 and not report.problems


# --- idempotency and labels that are never overwritten --------------------------------


def test_reimport_adds_nothing(manifest_dir, db, settings):
    import_source(manifest_dir / "manifest.csv", db, settings)
    again = import_source(manifest_dir / "manifest.csv", db, settings)
    assert again.ok and again.imported == [] and sorted(again.unchanged) == ["a", "b", "c"]
    assert again.batch_id is None and again.labels_added == 0
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Case)) == 3
        assert session.scalar(sa.select(sa.func.count()).select_from(Image)) == 6
        assert session.scalar(sa.select(sa.func.count()).select_from(Annotation)) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(ImportBatch)) == 1


def test_reimport_never_overwrites_a_clinicians_label(manifest_dir, db, settings):
    import_source(manifest_dir / "manifest.csv", db, settings)
    with db.session() as session:
        case_a = session.scalar(sa.select(Case.id).where(Case.case_key == "a"))
        annotate(session, case_a, "normal", source="manual")
    report = import_source(manifest_dir / "manifest.csv", db, settings)
    assert _labels(db)["a"] == "normal"
    assert "existing label was kept" in _reasons(report)["a"]


def test_labels_csv_labels_unlabelled_cases_only(manifest_dir, db, settings, tmp_path):
    import_source(manifest_dir / "manifest.csv", db, settings, use_labels=False)
    with db.session() as session:
        add_classes(session, ["normal", "polyp"])
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,label\na,polyp\nc,normal\nghost,polyp\nb,unknown-class\n")
    report = import_source(manifest_dir / "manifest.csv", db, settings, labels_csv=labels, use_labels=False)
    assert _labels(db) == {"a": "polyp", "c": "normal"}
    reasons = _reasons(report)
    assert "no case with this id" in reasons["ghost"]
    assert "unknown class" in reasons["b"]


# --- bad input: each skipped with a reason, the rest imports ----------------------------


def _bad_source(tmp_path: Path, name: str, data: bytes) -> Path:
    src = tmp_path / "bad"
    write_image(src / "good.png", 1)
    (src / name).write_bytes(data)
    make_manifest(src, ["good,good.png,,,", f"bad,{name},,,"])
    return src / "manifest.csv"


def _png_bytes(size=(40, 40), seed=5) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "corrupt or not an image"),
        ("truncated.png", _png_bytes()[:300], "truncated or damaged"),
        ("notes.png", b"this is a text file, not an image", "corrupt or not an image"),
        ("scan.pdf", b"%PDF-1.4 ...", "not a supported image type"),
        ("empty.jpg", b"", "the file is empty"),
    ],
)
def test_bad_image_files_are_skipped_with_a_reason(tmp_path, db, settings, name, data, reason):
    report = import_source(_bad_source(tmp_path, name, data), db, settings)
    assert report.imported == ["good"]
    assert reason in _reasons(report)["bad"]


def test_wrong_format_behind_an_image_extension_is_named(tmp_path, db, settings):
    gif = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(gif, "GIF")
    report = import_source(_bad_source(tmp_path, "anim.png", gif.getvalue()), db, settings)
    assert "GIF image" in _reasons(report)["bad"]


def test_images_over_the_pixel_limit_are_refused(tmp_path, db, settings):
    from dataclasses import replace

    src = tmp_path / "big"
    write_image(src / "small.png", 1, size=(20, 20))
    write_image(src / "big.png", 2, size=(200, 200))
    make_manifest(src, ["small,small.png,,,", "big,big.png,,,"])
    report = import_source(src / "manifest.csv", db, replace(settings, max_image_pixels=10_000))
    assert report.imported == ["small"]
    assert "too large (200×200 pixels" in _reasons(report)["big"]


def test_decompression_bomb_is_refused_without_decoding(tmp_path, db, settings):
    # A 20000x20000 single-colour PNG compresses to a few kB but would need 1.2 GB.
    bomb = io.BytesIO()
    PILImage.new("L", (20000, 20000)).save(bomb, "PNG")
    report = import_source(_bad_source(tmp_path, "bomb.png", bomb.getvalue()), db, settings)
    assert report.imported == ["good"]
    assert "too large" in _reasons(report)["bad"]


def test_nbi_without_wli_is_reported(tmp_path, db, settings):
    src = tmp_path / "folder"
    write_image(src / "WLI" / "a.png", 1)
    write_image(src / "NBI" / "a.png", 2)
    write_image(src / "NBI" / "orphan.png", 3)
    report = import_source(src, db, settings)
    assert report.imported == ["a"]
    assert _reasons(report)["orphan"] == "NBI image without its WLI image"


def test_nbi_without_wli_in_a_manifest_row(tmp_path, db, settings):
    src = tmp_path / "m"
    write_image(src / "w.png", 1)
    write_image(src / "n.png", 2)
    make_manifest(src, ["ok,w.png,,,", "orphan,,n.png,,"])
    report = import_source(src / "manifest.csv", db, settings)
    assert _reasons(report)["orphan"] == "NBI image without its WLI image"


def test_the_same_file_under_two_case_ids_is_imported_once(tmp_path, db, settings):
    src = tmp_path / "dup"
    write_image(src / "x.png", 1)
    (src / "copy.png").write_bytes((src / "x.png").read_bytes())
    make_manifest(src, ["first,x.png,,,", "second,copy.png,,,"])
    report = import_source(src / "manifest.csv", db, settings)
    assert report.imported == ["first"]
    assert "the same file as an image of case 'first' earlier in this import" in _reasons(report)["second"]
    later = make_manifest(tmp_path / "later", ["third,../dup/x.png,,,"])
    assert not import_source(later, db, settings).imported


def test_a_case_id_reused_with_other_images_is_refused(manifest_dir, db, settings, tmp_path):
    import_source(manifest_dir / "manifest.csv", db, settings)
    other = tmp_path / "other"
    write_image(other / "new.png", 77)
    make_manifest(other, ["a,new.png,,,"])
    report = import_source(other / "manifest.csv", db, settings)
    assert "already exists with different images" in _reasons(report)["a"]
    assert not report.ok


def test_manifest_paths_may_not_leave_the_manifest_folder(tmp_path, db, settings):
    write_image(tmp_path / "secret.png", 1)
    src = tmp_path / "m"
    write_image(src / "ok.png", 2)
    make_manifest(src, ["ok,ok.png,,,", "escape,../secret.png,,,", "absolute,/etc/passwd,,,", "gone,missing.png,,,"])
    reasons = _reasons(import_source(src / "manifest.csv", db, settings))
    assert "outside the manifest's folder" in reasons["escape"]
    assert "relative to the manifest" in reasons["absolute"]
    assert "was not found" in reasons["gone"]


def test_manifest_with_missing_columns_is_refused_as_a_whole(tmp_path, db, settings):
    src = tmp_path / "m"
    make_manifest(src, ["a,polyp"], header="id,label")
    with pytest.raises(SourceError, match="missing the column\\(s\\) case_id, wli_path"):
        import_source(src / "manifest.csv", db, settings)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage\x00\x01", b'case_id,wli_path\n"a,b\n'])
def test_unreadable_csv_is_refused_with_a_message(tmp_path, db, settings, content):
    (tmp_path / "manifest.csv").write_bytes(content)
    with pytest.raises(SourceError, match=r"readable CSV|missing the column"):
        import_source(tmp_path / "manifest.csv", db, settings)


def test_unknown_classes_are_skipped_once_a_class_list_exists(manifest_dir, db, settings, tmp_path):
    import_source(manifest_dir / "manifest.csv", db, settings)
    src = tmp_path / "more"
    write_image(src / "x.png", 50)
    write_image(src / "y.png", 51)
    make_manifest(src, ["x,x.png,,polyp,", "y,y.png,,Polypp,"])
    report = import_source(src / "manifest.csv", db, settings)
    assert report.imported == ["x"]
    assert "unknown class 'Polypp'" in _reasons(report)["y"]


def test_bad_rows_in_a_manifest(tmp_path, db, settings):
    src = tmp_path / "m"
    write_image(src / "a.png", 1)
    write_image(src / "b.png", 2)
    make_manifest(src, ["a,a.png,,,", "a,b.png,,,", ",b.png,,,", "s,b.png,,,holdout", "x\x07y,b.png,,,"])
    report = import_source(src / "manifest.csv", db, settings)
    assert report.imported == ["a"]
    reasons = [p.reason for p in report.problems]
    assert any("more than once" in r for r in reasons)
    assert any("case id is empty" in r for r in reasons)
    assert any("unknown split 'holdout'" in r for r in reasons)
    assert any("control characters" in r for r in reasons)


def test_hostile_zip_entries_are_skipped_and_never_written(tmp_path, db, settings):
    archive = tmp_path / "evil.zip"
    good = write_image(tmp_path / "g.png", 1).read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("WLI/good.png", good)
        zf.writestr("../../escaped.png", good)
        zf.writestr("/abs/evil.png", good)
        zf.writestr("C:/win/evil.png", good)
        zf.writestr("WLI/..\\..\\evil2.png", good)
        link = zipfile.ZipInfo("WLI/link.png")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    report = import_source(archive, db, settings)
    assert report.imported == ["good"]
    reasons = [p.reason for p in report.problems]
    assert sum("outside the archive" in r for r in reasons) == 2
    assert sum("absolute path" in r for r in reasons) == 2
    assert any("is a link" in r for r in reasons)
    assert not (tmp_path / "escaped.png").exists() and not Path("/abs/evil.png").exists()


def test_zip_bomb_is_refused_before_unpacking(tmp_path, db, settings):
    from dataclasses import replace

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("WLI/a.png", b"\0" * 5_000_000)
    with pytest.raises(SourceError, match="would unpack to"):
        import_source(archive, db, replace(settings, max_unzipped_bytes=1_000_000))


def test_not_a_zip(tmp_path, db, settings):
    not_a_zip = tmp_path / "upload.zip"
    not_a_zip.write_bytes(b"not a zip at all")
    with pytest.raises(SourceError, match="not a readable zip"):
        import_source(not_a_zip, db, settings)


def test_unrecognised_folder_layout(tmp_path, db, settings):
    write_image(tmp_path / "photos" / "x.png", 1)
    write_image(tmp_path / "photos" / "other" / "y.png", 2)
    with pytest.raises(SourceError, match="expected layout"):
        import_source(tmp_path / "photos", db, settings)


def test_nothing_importable_is_not_ok(tmp_path, db, settings):
    src = tmp_path / "m"
    (src / "x.png").parent.mkdir(parents=True)
    (src / "x.png").write_bytes(b"junk")
    make_manifest(src, ["x,x.png,,,"])
    report = import_source(src / "manifest.csv", db, settings)
    assert not report.ok and report.imported == []


def test_a_crash_mid_import_leaves_no_half_imported_case(manifest_dir, db, settings, monkeypatch):
    calls = {"n": 0}
    real = importer.annotate

    def failing_annotate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "annotate", failing_annotate)
    with pytest.raises(RuntimeError, match="power cut"):
        import_source(manifest_dir / "manifest.csv", db, settings)
    with db.session() as session:
        for table in (Case, Image, Annotation, ImportBatch):
            assert session.scalar(sa.select(sa.func.count()).select_from(table)) == 0
    monkeypatch.setattr(importer, "annotate", real)
    assert len(import_source(manifest_dir / "manifest.csv", db, settings).imported) == 3


def test_the_report_table_keeps_the_case_id_column_users_know(tmp_path, db, settings):
    report = import_source(_bad_source(tmp_path, "empty.jpg", b""), db, settings)
    frame = report.problems_frame()
    assert list(frame.columns) == ["case_id", "file", "reason"] and list(frame["case_id"]) == ["bad"]
    with db.session() as session:
        stored = session.scalar(sa.select(ImportBatch.report))
    assert stored["problems"] == [{"case_id": "bad", "file": "empty.jpg", "reason": "the file is empty"}]


def test_each_file_is_hashed_once_and_the_computed_view_is_never_decoded(tmp_path, db, settings, monkeypatch):
    import hashlib

    for i in range(2):
        write_image(tmp_path / "src" / "WLI" / f"w{i}.png", i)  # no NBI: the view is computed
    hashed, checked, real_sha256, real_check = [], [], hashlib.sha256, importer.check_image

    def counting_sha256(data=b"", *args, **kwargs):
        hashed.append(bytes(data))
        return real_sha256(data, *args, **kwargs)

    def counting_check(data, name, max_pixels):
        checked.append(name)
        return real_check(data, name, max_pixels)

    monkeypatch.setattr(hashlib, "sha256", counting_sha256)
    monkeypatch.setattr(importer, "check_image", counting_check)
    assert len(import_source(tmp_path / "src", db, settings).imported) == 2
    assert sorted(checked) == ["w0.png", "w1.png"]  # the source files only
    assert len(hashed) == len(set(hashed)) == 8  # 2 WLI + 2 computed NBI + 4 thumbnails, each once


def test_an_import_that_adds_cases_queues_one_prepare_job_and_a_repeat_none(manifest_dir, db, settings):
    """The prepare job encodes the new cases in the background, before anyone presses Retrain."""
    from mics_core.db.models import Job, JobKind

    def prepare_jobs() -> int:
        with db.session() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.kind == JobKind.PREPARE))

    import_source(manifest_dir / "manifest.csv", db, settings)
    assert prepare_jobs() == 1
    import_source(manifest_dir / "manifest.csv", db, settings)  # nothing new
    assert prepare_jobs() == 1


def test_a_huge_case_id_is_stored_cut_in_the_import_report(tmp_path, db, settings):
    huge = "x" * 5_000_000
    write_image(tmp_path / "a.png", 1)
    (tmp_path / "manifest.csv").write_text(f"case_id,wli_path\na,a.png\n{huge},missing.png\n")
    report = import_source(tmp_path / "manifest.csv", db, settings)
    assert report.problems
    with db.session() as session:
        stored = session.scalars(sa.select(ImportBatch.report)).one()
    assert len(str(stored)) < 2_000 and "5,000,000 characters" in stored["problems"][0]["case_id"]

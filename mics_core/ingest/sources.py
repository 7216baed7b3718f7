"""Finding the cases in an import source: a manifest CSV, a WLI/NBI folder, the MICS
authors' `<class>_WLI/` + `<class>_NBI/` folders, or a zip of any of them.

Discovery only pairs files and reads the manifest; it never opens images. Problems that
concern one case become `Problem` lines (the case is skipped, the rest imports); problems
that make the whole source unusable raise `SourceError`. Nothing outside the source is
ever read: manifest paths may not leave the manifest's folder, and a link (symlink) in a
folder layout that leads out of the source folder is reported, never followed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mics_core.db.models import SPLITS
from mics_core.errors import REASON_CHARS, RequestRefused, short

MANIFEST_COLUMNS = ("case_id", "wli_path", "nbi_path", "label", "split")
REQUIRED_MANIFEST_COLUMNS = ("case_id", "wli_path")
IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_CASE_KEY = 200


class SourceError(RequestRefused):
    """The source as a whole cannot be imported; the message says what to fix."""


@dataclass(frozen=True)
class CaseSpec:
    """One case found in a source; `case_key` is its identity (the manifest's `case_id` column)."""

    case_key: str
    wli: Path | None
    nbi: Path | None
    label: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class Problem:
    """One skipped item: the case it concerns (empty when unknown), the file or line, and why."""

    case_key: str
    file: str
    reason: str

    def as_row(self) -> dict[str, str]:
        """The report row, under the column names of the report CSV users already have; each value
        cut to what a person reads, since it is stored with the import batch."""
        return {
            "case_id": short(self.case_key),
            "file": short(self.file),
            "reason": short(self.reason, REASON_CHARS),
        }


def discover(root: Path, name: str | None = None) -> tuple[list[CaseSpec], list[Problem]]:
    """The cases in a manifest CSV or a folder (see the module docstring for layouts).

    `name` is what messages call the source: the user's zip file when `root` is the folder
    it was unpacked into (whose name means nothing to them)."""
    shown = name or root.name
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise SourceError(f"{root.name} is not a manifest CSV, a folder or a zip file")
        return read_manifest(root)
    if not root.is_dir():
        raise SourceError(f"{root} does not exist")
    base = root.resolve()
    root = _descend_single_folder(root)
    if (root / "manifest.csv").is_file():
        if not (root / "manifest.csv").resolve().is_relative_to(base):
            raise SourceError(f"manifest.csv in {shown} is a link to a file outside it; copy the file itself in")
        return read_manifest(root / "manifest.csv")
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "wli" in children:
        return _pair_folders(children["wli"], children.get("nbi"), base, class_of=_class_subfolder)
    if any(name.endswith("_wli") for name in children):
        return _pair_authors_layout(children, base)
    raise SourceError(
        f"no images found in the expected layout in {shown}: use a manifest.csv, "
        "WLI/ and NBI/ folders, or <class>_WLI/ and <class>_NBI/ folders"
    )


def _descend_single_folder(root: Path) -> Path:
    """A zip of a folder unpacks to one folder; look inside it (unless it is WLI/ itself)."""
    entries = [p for p in root.iterdir() if not _ignored(p)]
    if len(entries) == 1 and entries[0].is_dir() and not _is_layout_folder(entries[0].name):
        return entries[0]
    return root


def _is_layout_folder(name: str) -> bool:
    name = name.lower()
    return name in ("wli", "nbi") or name.endswith(("_wli", "_nbi"))


def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in IGNORED_NAMES


def check_case_key(raw: str) -> str | None:
    """The reason a case key is unusable, or None (the message says "case id": the column's name)."""
    if not raw:
        return "the case id is empty"
    if _CONTROL.search(raw):
        return "the case id contains control characters"
    if len(raw) > MAX_CASE_KEY:
        return f"the case id is longer than {MAX_CASE_KEY} characters"
    return None


def read_csv_text(path: Path, required: tuple[str, ...], known: tuple[str, ...]) -> pd.DataFrame:
    """A CSV as strings with normalised column names, or `SourceError` saying what is wrong."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path.name} is not a readable CSV file ({_first_line(exc)})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SourceError(
            f"{path.name} is missing the column(s) {', '.join(missing)}; expected columns: {', '.join(known)}"
        )
    return frame.apply(lambda column: column.str.strip())


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_manifest(csv_path: Path) -> tuple[list[CaseSpec], list[Problem]]:
    frame = read_csv_text(csv_path, REQUIRED_MANIFEST_COLUMNS, MANIFEST_COLUMNS)
    base = csv_path.parent.resolve()
    specs: list[CaseSpec] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, row in enumerate(frame.to_dict("records"), start=2):
        case_key = row["case_id"]
        where = f"{csv_path.name} line {number}"
        reason = check_case_key(case_key)
        if reason is None and case_key in seen:
            reason = "the case id appears more than once in the manifest"
        wli, nbi = row["wli_path"], row.get("nbi_path", "")
        if reason is None and not wli:
            reason = "NBI image without its WLI image" if nbi else "no WLI image path"
        split = row.get("split", "").lower() or None
        if reason is None and split not in (None, *SPLITS):
            reason = f"unknown split {row['split']!r} (use train, val or test)"
        paths = []
        for rel in (wli, nbi):
            resolved, path_reason = _manifest_path(base, rel)
            reason = reason or path_reason
            paths.append(resolved)
        if reason:
            problems.append(Problem(case_key, where, reason))
            continue
        seen.add(case_key)
        specs.append(CaseSpec(case_key, paths[0], paths[1], row.get("label") or None, split))
    return specs, problems


def _manifest_path(base: Path, rel: str) -> tuple[Path | None, str | None]:
    if not rel:
        return None, None
    candidate = Path(rel)
    if candidate.is_absolute() or _CONTROL.search(rel):
        return None, f"{rel!r} must be a path relative to the manifest"
    resolved = (base / candidate).resolve()
    if not resolved.is_relative_to(base):
        return None, f"{rel!r} points outside the manifest's folder"
    if not resolved.is_file():
        return None, f"{rel!r} was not found"
    return resolved, None


def _class_subfolder(modality_root: Path, path: Path) -> str | None:
    parts = path.relative_to(modality_root).parts
    return parts[0] if len(parts) > 1 else None


_FILE_LINK_OUT = "the file is a link to a place outside the import folder, so it was not read; copy the image itself in"
_FOLDER_LINK_OUT = "the folder is a link to a place outside the import folder, so it was not read; copy the images in"


def _files(root: Path, base: Path, problems: list[Problem]) -> list[Path]:
    """The files under `root`, sorted; a link that leads out of `base`, the source folder
    (a file link, a folder link, or `root` itself), becomes a problem and is never read.
    Links to folders are not descended into (`rglob`), so only their own target is checked."""
    if not root.resolve().is_relative_to(base):
        problems.append(Problem("", f"{root.name}/", _FOLDER_LINK_OUT))
        return []
    files = []
    for path in sorted(root.rglob("*")):
        if any(_ignored(Path(part)) for part in path.relative_to(root).parts):
            continue
        if not path.resolve().is_relative_to(base):
            if path.is_file() or path.is_dir():
                what = _FILE_LINK_OUT if path.is_file() else _FOLDER_LINK_OUT
                problems.append(Problem(path.stem, str(path.relative_to(root.parent)), what))
        elif path.is_file():
            files.append(path)
    return files


def _index_by_key(root: Path, base: Path, class_of, problems: list[Problem]) -> dict[str, tuple[Path, str | None]]:
    """`{case key: (file, class)}`; the key is `<class>/<stem>` with class folders."""
    found: dict[str, list[tuple[Path, str | None]]] = defaultdict(list)
    for path in _files(root, base, problems):
        label = class_of(root, path)
        key = f"{label}/{path.stem}" if label else path.stem
        found[key].append((path, label))
    index = {}
    for key, entries in found.items():
        if len(entries) > 1:
            names = ", ".join(str(p.relative_to(root.parent)) for p, _ in entries)
            problems.append(Problem(key, names, "several files with the same name; rename all but one"))
        elif reason := check_case_key(key):
            problems.append(Problem(key, str(entries[0][0].relative_to(root.parent)), reason))
        else:
            index[key] = entries[0]
    return index


def _pair_folders(wli_root: Path, nbi_root: Path | None, base: Path, class_of) -> tuple[list[CaseSpec], list[Problem]]:
    problems: list[Problem] = []
    wli = _index_by_key(wli_root, base, class_of, problems)
    nbi = _index_by_key(nbi_root, base, class_of, problems) if nbi_root else {}
    by_stem = defaultdict(list)
    for key in wli:
        by_stem[key.rsplit("/", 1)[-1]].append(key)
    matched: dict[str, Path] = {}
    for key, (path, _) in nbi.items():
        stem = key.rsplit("/", 1)[-1]
        partner = key if key in wli else (by_stem[stem][0] if len(by_stem[stem]) == 1 else None)
        if partner is None or partner in matched:
            problems.append(Problem(key, str(path.relative_to(nbi_root.parent)), "NBI image without its WLI image"))
        else:
            matched[partner] = path
    specs = [CaseSpec(key, path, matched.get(key), label) for key, (path, label) in sorted(wli.items())]
    return specs, problems


def _pair_authors_layout(children: dict[str, Path], base: Path) -> tuple[list[CaseSpec], list[Problem]]:
    specs: list[CaseSpec] = []
    problems: list[Problem] = []
    for name, folder in sorted(children.items()):
        if name.endswith("_nbi") and f"{name[:-4]}_wli" not in children:
            for path in _files(folder, base, problems):
                problems.append(Problem(path.stem, f"{folder.name}/{path.name}", "NBI image without its WLI image"))
        if not name.endswith("_wli"):
            continue
        label = folder.name[:-4]
        nbi_folder = children.get(f"{name[:-4]}_nbi")
        found, lost = _pair_folders(folder, nbi_folder, base, class_of=lambda _root, _path: None)
        specs += [CaseSpec(f"{label}/{s.case_key}", s.wli, s.nbi, label) for s in found]
        problems += [Problem(f"{label}/{p.case_key}", p.file, p.reason) for p in lost]
    return specs, problems

"""`python -m mics_core bench`: MICS against its baselines and ablations on one split.

Every method is a peer with one signature, `method(split, settings) -> (probs, confidence)`
on the held-out test cases, so each is trained and evaluated the same way and an
ablation is a settings switch, not a copy. Pre-training depends only on the seed's
non-test images, so it runs once per seed and serves every MICS variant that uses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mics_core.baselines import predict_images, train_fixmatch, train_supervised
from mics_core.config import TrainSettings
from mics_core.data import PairRecord, load_pairs, records_from_manifest
from mics_core.metrics import evaluate
from mics_core.train import pretrain_encoders, train_mics
from mics_core.train.devices import resolve_device

METHODS = ("supervised", "fixmatch_wli", "mics_no_pretrain", "mics_no_shift", "mics")
REPORTED = ("accuracy", "macro_f1", "auc", "ece", "aurc", "seconds")


@dataclass
class Split:
    """One seed's split: held-out test cases, a labelled pool, and unlabelled cases."""

    records: list[PairRecord]
    classes: list[str]
    test: np.ndarray
    labelled: np.ndarray
    unlabelled: np.ndarray
    cache: dict[str, object] = field(default_factory=dict)

    def training_records(self) -> list[PairRecord]:
        """Labelled and unlabelled (label hidden) records; test cases are never seen."""
        hidden = [replace(self.records[i], label=-1) for i in self.unlabelled]
        return [self.records[i] for i in self.labelled] + hidden

    @property
    def test_labels(self) -> np.ndarray:
        return np.array([self.records[i].label for i in self.test])


def make_split(
    records: list[PairRecord], classes: list[str], fraction: float, seed: int, test_fraction: float = 0.2
) -> Split:
    """Stratified: `test_fraction` of each class held out; `fraction` of the rest labelled (≥ 1 per class)."""
    rng = np.random.default_rng(seed)
    labels = np.array([r.label for r in records])
    test, labelled, unlabelled = [], [], []
    for y in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(labels == y))
        n_test = round(len(rows) * test_fraction)
        rest = rows[n_test:]
        n_lab = max(1, round(len(rest) * fraction))
        test += rows[:n_test].tolist()
        labelled += rest[:n_lab].tolist()
        unlabelled += rest[n_lab:].tolist()
    unlabelled += np.flatnonzero(labels < 0).tolist()
    return Split(records, classes, np.sort(test), np.sort(labelled), np.sort(unlabelled))


Method = Callable[[Split, TrainSettings], tuple[np.ndarray, np.ndarray]]


def _images(split: Split, rows: np.ndarray, settings: TrainSettings) -> torch.Tensor:
    key = f"images-{settings.image_size}"
    if key not in split.cache:
        split.cache[key] = load_pairs(split.records, settings.image_size)
    return split.cache[key][rows]


def supervised(split: Split, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    images = _images(split, split.labelled, settings)
    labels = torch.tensor([split.records[i].label for i in split.labelled])
    models = train_supervised(images, labels, len(split.classes), settings, split.cache.get("time_limit"))
    test = _images(split, split.test, settings)
    probs = predict_images(list(models), [test[:, 0], test[:, 1]], resolve_device(settings.device)).numpy()
    return probs, probs.max(1)


def fixmatch_wli(split: Split, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    images = _images(split, split.labelled, settings)[:, 0]
    labels = torch.tensor([split.records[i].label for i in split.labelled])
    unlabelled = _images(split, split.unlabelled, settings)[:, 0]
    model = train_fixmatch(
        images, labels, unlabelled, len(split.classes), settings, time_limit=split.cache.get("time_limit")
    )
    test = _images(split, split.test, settings)[:, 0]
    probs = predict_images([model], [test], resolve_device(settings.device)).numpy()
    return probs, probs.max(1)


def _mics(split: Split, settings: TrainSettings, pretrained: bool) -> tuple[np.ndarray, np.ndarray]:
    records = split.training_records()
    state = None
    if pretrained:
        if "encoders" not in split.cache:
            started = time.perf_counter()
            split.cache["encoders"] = pretrain_encoders(records, settings).state
            split.cache["pretrain_seconds"] = time.perf_counter() - started
        state = split.cache["encoders"]
    model = train_mics(records, split.classes, settings, encoder_state=state, pretrain_first=False)
    out = model.predict([split.records[i] for i in split.test])
    return out["probs"], 1 - out["uncertainty"]


METHOD_FUNCTIONS: dict[str, Method] = {
    "supervised": supervised,
    "fixmatch_wli": fixmatch_wli,
    "mics_no_pretrain": lambda split, s: _mics(split, s, pretrained=False),
    "mics_no_shift": lambda split, s: _mics(split, replace(s, shift=False), pretrained=True),
    "mics": lambda split, s: _mics(split, s, pretrained=True),
}


def run_benchmark(
    manifest: Path,
    fraction: float,
    seeds: int,
    settings: TrainSettings,
    methods: tuple[str, ...] = METHODS,
    budget_minutes: float | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, object]]:
    """Train and evaluate every method on the same split per seed; one row per (method, seed)."""
    records, classes = records_from_manifest(manifest)
    rows: list[dict[str, object]] = []
    for seed in range(seeds):
        split = make_split(records, classes, fraction, seed)
        if budget_minutes:
            split.cache["time_limit"] = budget_minutes * 60 / len(methods)
        log(f"seed {seed}: {len(split.labelled)} labelled, {len(split.unlabelled)} unlabelled, {len(split.test)} test")
        seeded = replace(settings, seed=seed)
        for name in methods:
            started = time.perf_counter()
            had_encoders = "encoders" in split.cache
            probs, confidence = METHOD_FUNCTIONS[name](split, seeded)
            seconds = time.perf_counter() - started
            if name.startswith("mics") and had_encoders:
                seconds += float(split.cache.get("pretrain_seconds", 0.0))  # charge the shared pre-training
            metrics = evaluate(probs, split.test_labels, classes, confidence)
            rows.append(
                {"method": name, "seed": seed, **{k: metrics[k] for k in REPORTED if k in metrics}, "seconds": seconds}
            )
            log(f"  {name:<17} accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  {seconds:.0f} s")
    return rows


def summarise(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Mean and std over seeds per method (keys as in the JSON output, std under `<key>_std`)."""
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        summary: dict[str, object] = {"method": name}
        for key in REPORTED:
            values = np.array([r[key] for r in mine], float)
            summary[key] = float(np.nanmean(values))
            summary[f"{key}_std"] = float(np.nanstd(values))
        out.append(summary)
    return out


def format_table(summary: list[dict[str, object]]) -> str:
    header = "| method | accuracy | macro-F1 | AUC | ECE | AURC | seconds |\n|---|---|---|---|---|---|---|"
    lines = [header]
    for row in summary:
        cells = [f"{row[k]:.3f} ± {row[k + '_std']:.3f}" for k in REPORTED[:-1]]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row['seconds']:.0f} |")
    return "\n".join(lines)


def write_json(summary: list[dict[str, object]], path: Path) -> None:
    keys = ("method", *REPORTED)
    Path(path).write_text(json.dumps([{k: row[k] for k in keys} for row in summary], indent=2))

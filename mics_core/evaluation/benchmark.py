"""`python -m mics_core bench`: MICS against its baselines and ablations on one split.

Every method is a peer with one signature, `method(split, settings) -> (probs, confidence)`
on the held-out test cases, so each is trained and evaluated the same way and an
ablation is a settings switch, not a copy. Pre-training depends only on the seed's
non-test images, so it runs once per seed and serves every MICS variant that uses it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading

from mics_core.config import TrainSettings, pretraining_key
from mics_core.data import PairRecord, load_pairs, records_from_manifest
from mics_core.devices import resolve_device
from mics_core.evaluation.baselines import FixMatch, Supervised, predict_images, train_baseline
from mics_core.features import record_features
from mics_core.metrics import evaluate
from mics_core.predict import predict
from mics_core.progress import Reporter
from mics_core.train import initial_encoders, pretrain_encoders, train_mics

METHODS = ("imagenet_probe", "label_spreading", "mics_no_semi", "mics")
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
    reporter: Reporter = field(default_factory=Reporter)

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
    rows = (np.sort(np.array(part, int)) for part in (test, labelled, unlabelled))  # int even when empty
    return Split(records, classes, *rows)


def content_hash(records: list[PairRecord]) -> str:
    """One hash of every image: part of the key of a cached pre-training."""
    return hashlib.sha256("".join(r.content for r in records).encode()).hexdigest()


Method = Callable[[Split, TrainSettings], tuple[np.ndarray, np.ndarray]]


def _images(split: Split, rows: np.ndarray, settings: TrainSettings) -> torch.Tensor:
    size = settings.pretrain.image_size
    if f"images-{size}" not in split.cache:
        split.cache[f"images-{size}"] = load_pairs(split.records, size)
    return split.cache[f"images-{size}"][rows]


def _labels(split: Split, rows: np.ndarray) -> torch.Tensor:
    return torch.tensor([split.records[i].label for i in rows])


def supervised(split: Split, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    images = _images(split, split.labelled, settings)
    method = Supervised(images, _labels(split, split.labelled), len(split.classes), settings)
    models = train_baseline(method, settings, split.reporter, split.cache.get("time_limit"))
    test = _images(split, split.test, settings)
    probs = predict_images(list(models), [test[:, 0], test[:, 1]], resolve_device(settings.device)).numpy()
    return probs, probs.max(1)


def fixmatch_wli(split: Split, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    images = _images(split, split.labelled, settings)[:, 0]
    unlabelled = _images(split, split.unlabelled, settings)[:, 0]
    method = FixMatch(images, _labels(split, split.labelled), unlabelled, len(split.classes), settings)
    model = train_baseline(method, settings, split.reporter, split.cache.get("time_limit"))
    test = _images(split, split.test, settings)[:, 0]
    probs = predict_images([model], [test], resolve_device(settings.device)).numpy()
    return probs, probs.max(1)


def split_pretraining(split: Split, settings: TrainSettings) -> dict[str, torch.Tensor]:
    """Pre-trained encoders for this split, from memory, the on-disk cache, or trained now.

    Pre-training sees only non-test images, which depend on the seed alone, so every label
    fraction of a seed shares one pre-training; stage-2 and baseline settings are not part of
    its identity (`pretraining_key`), so changing them reuses it.
    """
    if "encoders" in split.cache:
        return split.cache["encoders"]
    path = split.cache["root"] / f"pretrain-{pretraining_key(settings, split.cache['data_hash'])}.safetensors"
    if not path.exists():
        result = pretrain_encoders(split.training_records(), settings, split.reporter)
        meta = {"seconds": result.seconds, "losses": result.final_losses()}
        save_file(result.state, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
    with safe_open(str(path), "pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
    split.cache["encoders"] = load_file(str(path))
    split.cache["pretrain_seconds"], split.cache["pretrain_losses"] = meta["seconds"], meta.get("losses", {})
    return split.cache["encoders"]


def uses_pretraining(name: str, settings: TrainSettings) -> bool:
    return name.startswith("mics") and name != "mics_no_pretrain" and settings.pretrain.epochs > 0


def _mics(split: Split, settings: TrainSettings, pretrained: bool) -> tuple[np.ndarray, np.ndarray]:
    state = split_pretraining(split, settings) if pretrained else None
    features = split.cache["root"] / "features"
    model = train_mics(
        split.training_records(),
        split.classes,
        settings,
        encoder_state=state,
        pretrain_first=False,
        cache_root=features,
        reporter=split.reporter,
    )
    out = predict(model, [split.records[i] for i in split.test], cache_root=features)
    return out["probs"], 1 - out["uncertainty"]


IMAGENET_FEATURES = {"backbone": "tf_efficientnet_lite0", "image_size": 224, "weights": "imagenet"}


def _imagenet_features(split: Split, settings: TrainSettings) -> np.ndarray:
    """L2-normalised pooled WLI features of every record under frozen ImageNet Lite0 at 224 px
    (shared with MICS's feature cache when MICS stands on the same encoders)."""
    frozen = TrainSettings().replace(**IMAGENET_FEATURES, views=settings.finetune.views, device=settings.device)
    features = record_features(initial_encoders(frozen), frozen, split.records, split.cache["root"] / "features")
    return torch.nn.functional.normalize(features[:, 0, 0], dim=1).numpy()


def _test_probs(split: Split, classes_seen: np.ndarray, probs: np.ndarray) -> np.ndarray:
    out = np.zeros((len(split.test), len(split.classes)))
    out[:, classes_seen] = probs
    return out


def imagenet_probe(split: Split, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """The strongest simple baseline: frozen ImageNet EfficientNet-Lite0 at 224 px, pooled WLI
    features (L2-normalised), logistic regression (C = 10) on the labelled pool. It does not
    depend on the MICS settings."""
    pooled = _imagenet_features(split, settings)
    labels = np.array([r.label for r in split.records])
    probe = LogisticRegression(C=10, max_iter=5000).fit(pooled[split.labelled], labels[split.labelled])
    probs = _test_probs(split, probe.classes_, probe.predict_proba(pooled[split.test]))
    return probs, probs.max(1)


def label_spreading(split: Split, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """The classic graph baseline on the same ImageNet features: labels spread over a 10-nearest-
    neighbour graph of the labelled, unlabelled and test cases (transductive, as it is used)."""
    pooled = _imagenet_features(split, settings)
    rows = np.concatenate([split.labelled, split.unlabelled, split.test])
    target = np.full(len(rows), -1)
    target[: len(split.labelled)] = [split.records[i].label for i in split.labelled]
    model = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=1000).fit(pooled[rows], target)
    probs = _test_probs(split, model.classes_, model.label_distributions_[-len(split.test) :])
    return probs, probs.max(1)


METHOD_FUNCTIONS: dict[str, Method] = {
    "imagenet_probe": imagenet_probe,
    "label_spreading": label_spreading,
    "supervised": supervised,
    "fixmatch_wli": fixmatch_wli,
    "mics_no_pretrain": lambda split, s: _mics(split, s.replace(pretrain_epochs=0), pretrained=False),
    "mics_no_semi": lambda split, s: _mics(split, s.replace(semi_supervised=False), uses_pretraining("mics", s)),
    "mics_shift": lambda split, s: _mics(split, s.replace(shift=True), uses_pretraining("mics", s)),
    "mics": lambda split, s: _mics(split, s, uses_pretraining("mics", s)),
}


def progress_lines(log: Callable[[str], None], every: float = 30.0) -> Reporter:
    """A reporter that logs the phase, step and loss at most every `every` seconds (and each
    phase's last step), so a long benchmark sent to a file shows where it is."""
    last = {"time": 0.0}

    def on_step(phase: str, step: int, total: int, losses: dict[str, float]) -> None:
        now = time.perf_counter()
        if step == total or now - last["time"] >= every:
            last["time"] = now
            log(f"    {phase} {step}/{total}  loss {losses.get('total', float('nan')):.4f}")

    return Reporter(on_step=on_step)


def run_benchmark(
    manifest: Path,
    fraction: float,
    seeds: int,
    settings: TrainSettings,
    methods: tuple[str, ...] = METHODS,
    budget_minutes: float | None = None,
    cache: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, object]]:
    """Train and evaluate every method on the same split per seed; one row per (method, seed).

    `cache` keeps pre-trained encoders and frozen features between runs (a temporary folder
    when None); a cached pre-training is still charged its original time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(cache or tmp)
        root.mkdir(parents=True, exist_ok=True)
        return _run(manifest, fraction, seeds, settings, methods, budget_minutes, root, log or _print)


def _print(line: str) -> None:
    print(line, flush=True)  # unbuffered: a run sent to a file shows its progress as it goes


def _run(
    manifest: Path,
    fraction: float,
    seeds: int,
    settings: TrainSettings,
    methods: tuple[str, ...],
    budget_minutes: float | None,
    root: Path,
    log: Callable[[str], None],
) -> list[dict[str, object]]:
    records, classes = records_from_manifest(manifest)
    data_hash = content_hash(records)
    rows: list[dict[str, object]] = []
    for seed in range(seeds):
        split = make_split(records, classes, fraction, seed)
        split.cache |= {"root": root, "data_hash": data_hash}
        split.reporter = progress_lines(log)
        if budget_minutes:
            split.cache["time_limit"] = budget_minutes * 60
        log(f"seed {seed}: {len(split.labelled)} labelled, {len(split.unlabelled)} unlabelled, {len(split.test)} test")
        seeded = settings.replace(seed=seed)
        if any(uses_pretraining(name, seeded) for name in methods):
            split_pretraining(split, seeded)
            log(f"  pre-training: {split.cache['pretrain_seconds']:.0f} s")
        for name in methods:
            log(f"  {name} ...")
            started = time.perf_counter()
            probs, confidence = METHOD_FUNCTIONS[name](split, seeded)
            seconds = time.perf_counter() - started
            if uses_pretraining(name, seeded):  # each variant is charged the whole pre-training it stands on
                seconds += float(split.cache["pretrain_seconds"])
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

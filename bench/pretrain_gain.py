"""Does stage-1 pre-training make the frozen features better than the initial ones?

For each candidate backbone, image size and initial weights (random, or `imagenet`), on the
benchmark's split of each seed, the frozen features of the initial encoders and of
pre-trained ones are scored on the held-out test cases three ways: a linear probe
(logistic regression on both views' pooled features) fitted on
the labelled pool, the same probe with every non-test case labelled (what the features
hold at all), and MICS stage 2 as the product trains it. Stage 1 sees only non-test
images. The CPU preset's backbone is the one whose pre-training pays on real images.

    python -m bench.pretrain_gain --data MANIFEST.csv [--candidates BACKBONE:SIZE:EPOCHS[:imagenet] ...]
        [--fraction 0.1] [--seeds 3] [--cache data/bench-cache]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mics_core.config import TrainSettings
from mics_core.data import records_from_manifest
from mics_core.evaluation.benchmark import METHOD_FUNCTIONS, Split, content_hash, make_split, split_pretraining
from mics_core.features import record_features
from mics_core.train import initial_encoders


def linear_probe(features: torch.Tensor, labels: np.ndarray, fit_rows: np.ndarray, split: Split) -> float:
    """Test accuracy of logistic regression on the (N, views, 2, C) features' own view, fitted on
    `fit_rows`; features are standardised over every non-test case, as stage 2 does."""
    pooled = features[:, 0].flatten(1).numpy()
    scaler = StandardScaler().fit(pooled[np.concatenate([split.labelled, split.unlabelled])])
    probe = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(pooled[fit_rows]), labels[fit_rows])
    return float((probe.predict(scaler.transform(pooled[split.test])) == labels[split.test]).mean())


def measure(split: Split, settings: TrainSettings) -> dict[str, float]:
    """Probe and stage-2 accuracies of random and pre-trained encoders on one split."""
    labels = np.array([r.label for r in split.records])
    every_label = np.concatenate([split.labelled, split.unlabelled])
    row: dict[str, float] = {}
    for name, state in (("initial", initial_encoders(settings)), ("pretrained", split_pretraining(split, settings))):
        features = record_features(state, settings, split.records, split.cache["root"] / "features")
        row[f"probe_pool_{name}"] = linear_probe(features, labels, split.labelled, split)
        row[f"probe_all_{name}"] = linear_probe(features, labels, every_label, split)
    for name, method in (("initial", "mics_no_pretrain"), ("pretrained", "mics")):
        probs, _ = METHOD_FUNCTIONS[method](split, settings)
        row[f"mics_{name}"] = float((probs.argmax(1) == split.test_labels).mean())
    row["seconds"] = float(split.cache["pretrain_seconds"])
    row["aligned"] = split.cache["pretrain_losses"].get("aligned", float("nan"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a labelled import manifest")
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=["resnet10t:64:40", "mobilenetv3_small_100:128:10"],
        help="backbone:image size:pre-training epochs",
    )
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled share of the non-test cases")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, help="keep pre-trained encoders and features here between runs")
    args = parser.parse_args()
    records, classes = records_from_manifest(args.data)
    print(
        f"{args.data}: {len(records)} cases, {args.fraction:.0%} labelled, {args.seeds} seeds, torch threads "
        f"{torch.get_num_threads()}; chance of the aligned InfoNCE: ln(batch)"
    )
    print(
        "| backbone | size | epochs | pre-train (s) | aligned InfoNCE at the end (chance) "
        "| accuracy, initial → pre-trained: probe, labelled pool | probe, all non-test labelled | MICS stage 2 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.cache or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for candidate in args.candidates:
            backbone, size, epochs, *weights = candidate.split(":")
            settings = TrainSettings().replace(
                backbone=backbone,
                image_size=int(size),
                pretrain_epochs=int(epochs),
                weights=weights[0] if weights else None,
            )
            rows = []
            for seed in range(args.seeds):
                split = make_split(records, classes, args.fraction, seed)
                split.cache |= {"root": root, "data_hash": content_hash(records)}
                rows.append(measure(split, settings.replace(seed=seed)))
                print(f"  seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            chance = math.log(min(settings.pretrain.batch, len(split.training_records())))
            print(
                f"| {backbone} | {size} | {epochs} | {mean['seconds']:.0f} | {mean['aligned']:.2f} ({chance:.2f}) | "
                + " | ".join(
                    f"{mean[f'{k}_initial']:.3f} → {mean[f'{k}_pretrained']:.3f}"
                    for k in ("probe_pool", "probe_all", "mics")
                )
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()

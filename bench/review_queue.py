"""Errors found per N reviewed predictions: the review queue's strategies against random.

For each seed: a stratified split with `--fraction` of the cases labelled, MICS trained on
it (pre-training cached under data/bench-cache, as in bench/learning.sh), predictions of
the unlabelled pool written to a scratch SQLite database, and then the product's own
ranking (`mics_core.review.rank`) asked for the top N of each strategy. An "error found"
is a reviewed prediction that differs from the ground truth; random is averaged over 20
draws. Prints one table; with --json writes it.

    python -m bench.review_queue [--data MANIFEST] [--fraction 0.1] [--seeds 2] [--reviewed 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from mics_core.config import Settings, TrainSettings
from mics_core.data import records_from_manifest
from mics_core.db import init_db
from mics_core.db.models import Case, ModelVersion
from mics_core.evaluation.benchmark import content_hash, make_split, split_pretraining
from mics_core.evaluation.demo import generate
from mics_core.ingest.importer import import_source
from mics_core.labels import add_classes
from mics_core.predict import predict, write_predictions
from mics_core.review import STRATEGIES, Filters, rank
from mics_core.train import train_mics

RANDOM_DRAWS = 20


def errors_found(session, strategy: str, reviewed: int, truth: dict[str, str], seed: int = 0) -> int:
    items = rank(session, strategy, reviewed, Filters(unlabelled_only=True), seed=seed)
    return sum(item.predicted != truth[item.case_key] for item in items)


def run_seed(manifest: Path, fraction: float, seed: int, reviewed: int, cache: Path) -> dict[str, float]:
    records, classes = records_from_manifest(manifest)
    split = make_split(records, classes, fraction, seed)
    split.cache |= {"root": cache, "data_hash": content_hash(records)}
    settings = TrainSettings.from_env(seed=seed)
    started = time.perf_counter()
    state = split_pretraining(split, settings) if settings.pretrain.epochs else None
    training = split.training_records()
    model = train_mics(
        training, classes, settings, encoder_state=state, pretrain_first=False, cache_root=cache / "features"
    )
    pool = [records[i] for i in split.unlabelled]
    out = predict(model, pool, cache_root=cache / "features")
    truth = {r.case_key: classes[r.label] for r in pool}
    print(f"seed {seed}: trained and predicted {len(pool)} unlabelled cases in {time.perf_counter() - started:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Settings(db_url=f"sqlite:///{tmp}/review.db", data_root=Path(tmp) / "data")
        db = init_db(scratch.db_url)
        with db.session() as session:
            add_classes(session, classes)
        import_source(manifest, db, scratch, use_labels=False)
        with db.session() as session:
            ids = dict(session.execute(select(Case.case_key, Case.id)).all())
            version = ModelVersion(kind="mics", checkpoint_path="-", class_names=classes, active=True)
            session.add(version)
            session.flush()
            write_predictions(session, version.id, [ids[r.case_key] for r in pool], classes, out, None)
        with db.session() as session:
            row = {
                s: float(errors_found(session, s, reviewed, truth))
                for s in STRATEGIES
                if s not in ("random", "diversity", "predicted class")
            }
            row["random"] = float(
                np.mean([errors_found(session, "random", reviewed, truth, d) for d in range(RANDOM_DRAWS)])
            )
    row["pool error rate"] = float(np.mean(out["probs"].argmax(1) != np.array([r.label for r in pool])))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo/manifest.csv"))
    parser.add_argument("--fraction", type=float, default=0.10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--reviewed", type=int, default=50)
    parser.add_argument("--cache", type=Path, default=Path("data/bench-cache"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.exists() and args.data == Path("data/demo/manifest.csv"):
        generate(args.data.parent, pairs=600)
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = [run_seed(args.data, args.fraction, seed, args.reviewed, args.cache) for seed in range(args.seeds)]
    print(
        f"\nErrors found among the first {args.reviewed} reviewed unlabelled cases ({args.fraction:.0%} labelled, "
        f"{args.seeds} seed(s), mean ± std)\n"
    )
    print("| strategy | errors found | ratio to random |\n|---|---|---|")
    random = np.mean([r["random"] for r in rows])
    for name in [k for k in rows[0] if k != "pool error rate"]:
        values = np.array([r[name] for r in rows])
        print(f"| {name} | {values.mean():.1f} ± {values.std():.1f} | {values.mean() / random:.2f}× |")
    print(
        f"\nerror rate of the model on the whole unlabelled pool: {np.mean([r['pool error rate'] for r in rows]):.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""The retrain chain: pre-train when needed, fine-tune on the current labels, predict
every case, project the embeddings — each a progress phase of one job.

Nothing is registered until every phase has finished: a cancelled or crashed retrain
leaves the active model and its predictions exactly as they were, and a half-written
checkpoint never becomes a model version.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from sqlalchemy import insert

from mics_core.config import Settings, TrainSettings
from mics_core.data import PairRecord, records_from_db
from mics_core.db import Database
from mics_core.db.models import ModelVersion, Prediction
from mics_core.embed import project
from mics_core.labels import class_ids, label_snapshot
from mics_core.metrics import json_safe
from mics_core.registry import activate, active_version, latest_encoders
from mics_core.store import ImageStore, atomic_write
from mics_core.train import MICSModel, Reporter, pretrain_encoders, train_mics


def needs_pretraining(encoders: ModelVersion | None, n_cases: int, train: TrainSettings, growth: float) -> bool:
    """Pre-train when there are no encoders, they were made for other settings, or the
    pool of cases grew by more than `growth` (a share) since."""
    if encoders is None:
        return True
    same = all(encoders.settings.get(k) == getattr(train, k) for k in ("backbone", "image_size", "weights"))
    return not same or n_cases > encoders.metrics.get("n_cases", 0) * (1 + growth)


def run_retrain(
    db: Database, settings: Settings, train: TrainSettings, reporter: Reporter, force_pretrain: bool = False
) -> int:
    """Run the chain and return the new, active model version's id."""
    store = ImageStore(settings)
    models_dir = settings.data_root / "models"
    with db.session() as session:
        snapshot = label_snapshot(session)
        records, case_ids, classes = records_from_db(session, store, upto=snapshot)
        encoders = latest_encoders(session)
        parent = active_version(session)
        parent_id = parent.id if parent else None
        pretrain_now = force_pretrain or needs_pretraining(encoders, len(records), train, settings.pretrain_growth)
        encoder_path = None if pretrain_now else store.resolve(encoders.checkpoint_path)
    if not records:
        raise ValueError("there are no cases to train on; import images first")
    state = _pretrain(db, store, models_dir, records, train, reporter) if pretrain_now else load_file(str(encoder_path))
    model = train_mics(
        records,
        classes,
        train,
        encoder_state=state,
        pretrain_first=False,
        cache_root=settings.data_root / "cache" / "features",
        reporter=reporter,
    )
    outputs = _predict(model, records, settings, reporter)
    reporter.step("umap", 0, 1, {})
    coords = project(outputs["embedding"], train.seed)
    reporter.step("umap", 1, 1, {})
    path = models_dir / f"mics-{uuid.uuid4().hex[:12]}.safetensors"
    model.info |= {"label_snapshot": snapshot}
    model.save(path)
    with db.session() as session:
        version = ModelVersion(
            kind="mics",
            checkpoint_path=str(path.relative_to(settings.data_root)),
            settings=asdict(train),
            class_names=classes,
            metrics=json_safe(model.metrics),
            label_snapshot=snapshot,
            parent_id=parent_id,
            n_labels=int(sum(r.label >= 0 for r in records)),
        )
        session.add(version)
        session.flush()
        _write_predictions(session, version.id, case_ids, classes, outputs, coords)
        activate(session, version.id)
        return version.id


def _pretrain(
    db: Database,
    store: ImageStore,
    models_dir: Path,
    records: list[PairRecord],
    train: TrainSettings,
    reporter: Reporter,
) -> dict:
    result = pretrain_encoders(records, train, reporter)
    path = models_dir / f"encoders-{uuid.uuid4().hex[:12]}.safetensors"
    atomic_write(path, lambda tmp: save_file(result.state, str(tmp)))
    with db.session() as session:
        session.add(
            ModelVersion(
                kind="encoders",
                checkpoint_path=str(path.relative_to(store.data_root)),
                settings=asdict(train),
                metrics={"n_cases": len(records), "seconds": result.seconds, "final_loss": result.history[-1]["total"]},
            )
        )
    return result.state


def _predict(
    model: MICSModel, records: list[PairRecord], settings: Settings, reporter: Reporter, chunk: int = 512
) -> dict[str, np.ndarray]:
    parts = []
    total = -(-len(records) // chunk)
    started = time.perf_counter()
    for i in range(total):
        parts.append(model.predict(records[i * chunk : (i + 1) * chunk], settings.data_root / "cache" / "features"))
        reporter.step("predict", i + 1, total, {"seconds": time.perf_counter() - started})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _write_predictions(
    session,
    version_id: int,
    case_ids: list[int],
    classes: list[str],
    out: dict[str, np.ndarray],
    coords: np.ndarray | None,
) -> None:
    ids = class_ids(session)
    label_id = [ids[name] for name in classes]
    probs = out["probs"]
    top2 = np.sort(probs, 1)[:, -2:]
    rows = []
    for i, case_id in enumerate(case_ids):
        rows.append(
            {
                "model_version_id": version_id,
                "case_id": case_id,
                "label_id": label_id[int(probs[i].argmax())],
                "probability": float(top2[i, 1]),
                "margin": float(top2[i, 1] - top2[i, 0]),
                "probs": [round(float(p), 6) for p in probs[i]],
                "uncertainty": float(out["uncertainty"][i]),
                "uncertainty_wli": float(out["uncertainty_wli"][i]),
                "uncertainty_nbi": float(out["uncertainty_nbi"][i]),
                "conflict": float(out["conflict"][i]),
                "wli_label_id": label_id[int(out["pred_wli"][i])],
                "nbi_label_id": label_id[int(out["pred_nbi"][i])],
                "embedding": out["embedding"][i].astype(np.float16).tobytes(),
                "umap_x": float(coords[i, 0]) if coords is not None else None,
                "umap_y": float(coords[i, 1]) if coords is not None else None,
            }
        )
    session.execute(insert(Prediction), rows)

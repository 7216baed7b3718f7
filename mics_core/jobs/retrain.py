"""The two jobs of the learning core.

- `run_prepare`, queued after every import: the encoders (stage-1 pre-training when it is on and
  due) and every case's features in the cache, so that a retrain after labelling is a fine-tuning.
- `run_retrain`: the same preparation (nothing left to do after a prepare job), fine-tuning on the
  current labels, prediction of every case, the UMAP projection — each a progress phase.

Both resume: features are cached case by case, so a job killed half-way and run again (the
queue re-queues it when its worker stops beating) encodes only the cases still missing.
Nothing is registered until every phase has finished: a cancelled or crashed retrain leaves
the active model and its predictions exactly as they were, and a half-written checkpoint never
becomes a model version.
"""

from __future__ import annotations

import uuid

import torch
from safetensors.torch import load_file, save_file

from mics_core.config import Settings, TrainSettings, pretraining_key
from mics_core.data import PairRecord, records_from_db
from mics_core.db import Database
from mics_core.db.models import ModelKind, ModelVersion
from mics_core.embed import project
from mics_core.features import FeatureCache, build_encoders, encoder_fingerprint
from mics_core.labels import label_snapshot
from mics_core.metrics import json_safe
from mics_core.predict import predict, write_predictions
from mics_core.registry import activate, active_version, latest_encoders
from mics_core.store import ImageStore, atomic_write
from mics_core.train import Reporter, initial_encoders, pretrain_encoders, train_mics


def needs_pretraining(encoders: ModelVersion | None, n_cases: int, train: TrainSettings, growth: float) -> bool:
    """Pre-train when stage 1 is on and there are no encoders, they were made with other stage-1
    settings (any of them: backbone, epochs, losses...), or the pool of cases grew by more than
    `growth` (a share) since."""
    if train.pretrain.epochs == 0:
        return False
    if encoders is None:
        return True
    same = pretraining_key(TrainSettings.from_dict(encoders.settings)) == pretraining_key(train)
    return not same or n_cases > encoders.metrics.get("n_cases", 0) * (1 + growth)


def prepare(
    db: Database, settings: Settings, records: list[PairRecord], train: TrainSettings, reporter: Reporter
) -> dict[str, torch.Tensor]:
    """The encoders for `train` (registered ones, pre-trained now when due, or the initial ones
    when stage 1 is off) with every record's features in the cache, encoded case by case."""
    with db.session() as session:
        encoders = latest_encoders(session)
        pretrain_now = needs_pretraining(encoders, len(records), train, settings.pretrain_growth)
        path = ImageStore(settings).resolve(encoders.checkpoint_path) if encoders is not None else None
    if pretrain_now:
        state = _pretrain(db, settings, records, train, reporter)
    elif train.pretrain.epochs > 0:
        state = load_file(str(path))
    else:
        state = initial_encoders(train)
    cache = FeatureCache(settings.feature_cache_root, encoder_fingerprint(state, train), train.finetune.views)
    if cache.missing(records):
        cache.features(
            records,
            build_encoders(state, train),
            train,
            on_chunk=lambda done, total: reporter.step("features", done, total, {}),
        )
    return state


def run_prepare(db: Database, settings: Settings, train: TrainSettings, reporter: Reporter) -> None:
    """The prepare job: encoders and features of every case, ready for the next retrain."""
    with db.session() as session:
        records, _, _ = records_from_db(session, ImageStore(settings))
    if records:
        prepare(db, settings, records, train, reporter)


def run_retrain(db: Database, settings: Settings, train: TrainSettings, reporter: Reporter) -> int:
    """Run the chain and return the new, active model version's id."""
    store = ImageStore(settings)
    with db.session() as session:
        snapshot = label_snapshot(session)
        records, case_ids, classes = records_from_db(session, store, upto=snapshot)
        parent = active_version(session)
        parent_id = parent.id if parent else None
    if not records:
        raise ValueError("there are no cases to train on; import images first")
    state = prepare(db, settings, records, train, reporter)
    cache = settings.feature_cache_root
    model = train_mics(records, classes, train, encoder_state=state, cache_root=cache, reporter=reporter)
    outputs = predict(model, records, cache, reporter)
    reporter.step("umap", 0, 1, {})
    coords = project(outputs["embedding"], train.seed)
    reporter.step("umap", 1, 1, {})
    path = settings.models_root / f"mics-{uuid.uuid4().hex[:12]}.safetensors"
    model.info |= {"label_snapshot": snapshot}
    model.save(path)
    with db.session() as session:
        version = ModelVersion(
            kind=ModelKind.MICS,
            checkpoint_path=str(path.relative_to(settings.data_root)),
            settings=train.to_dict(),
            class_names=classes,
            metrics=json_safe(model.metrics),
            label_snapshot=snapshot,
            parent_id=parent_id,
            n_labels=int(sum(r.label >= 0 for r in records)),
        )
        session.add(version)
        session.flush()
        write_predictions(session, version.id, case_ids, classes, outputs, coords)
        activate(session, version.id)
        return version.id


def _pretrain(
    db: Database, settings: Settings, records: list[PairRecord], train: TrainSettings, reporter: Reporter
) -> dict:
    result = pretrain_encoders(records, train, reporter)
    path = settings.models_root / f"encoders-{uuid.uuid4().hex[:12]}.safetensors"
    atomic_write(path, lambda tmp: save_file(result.state, str(tmp)))
    with db.session() as session:
        session.add(
            ModelVersion(
                kind=ModelKind.ENCODERS,
                checkpoint_path=str(path.relative_to(settings.data_root)),
                settings=train.to_dict(),
                metrics={"n_cases": len(records), "seconds": result.seconds, "final_loss": result.history[-1]["total"]},
            )
        )
    return result.state

"""Prediction: a model version's calibrated probabilities, uncertainty and features for cases,
and the prediction rows the screens read.

A case's uncertainty is its calibrated probability of being wrong, 1 - max p: a number a
clinician can read ("about one in five of these is wrong") and the review queue's ranking.

Every prediction row names the model version that made it, so rolling back to an older
version shows its predictions again without recomputing them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sqlalchemy import insert
from sqlalchemy.orm import Session

from mics_core.data import PairRecord
from mics_core.db.models import Prediction
from mics_core.features import feature_reader
from mics_core.labels import class_ids
from mics_core.model.checkpoint import MICSModel
from mics_core.model.heads import FusionHead, HeadEnsemble
from mics_core.progress import SILENT, Reporter

__all__ = ["predict", "predict_features", "write_predictions"]


def predict_features(
    model: FusionHead | HeadEnsemble, pooled: torch.Tensor, temperature: float = 1.0, batch: int = 4096
) -> dict[str, np.ndarray]:
    """Predictions for (N, 2, C) pooled features, every probability scaled by `temperature`."""
    device = next(model.parameters()).device
    parts = [model.predict(pooled[start : start + batch].to(device)) for start in range(0, len(pooled), batch)]
    if not parts:
        return {}
    out = {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}
    probs, wli, nbi = (F.softmax(out[k] / temperature, 1) for k in ("logits", "logits_wli", "logits_nbi"))
    return {
        "probs": probs.numpy(),
        "uncertainty": (1 - probs.max(1).values).numpy(),
        "uncertainty_wli": (1 - wli.max(1).values).numpy(),
        "uncertainty_nbi": (1 - nbi.max(1).values).numpy(),
        "conflict": (0.5 * (wli - nbi).abs().sum(1)).numpy(),  # total variation between the two views
        "pred_wli": wli.argmax(1).numpy(),
        "pred_nbi": nbi.argmax(1).numpy(),
        "embedding": out["embedding"].numpy(),
    }


def predict(
    model: MICSModel,
    records: list[PairRecord],
    cache_root: Path | None = None,
    reporter: Reporter = SILENT,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Calibrated probabilities, fused and per-view uncertainty, conflict and embedding of each record,
    `chunk` records at a time (through the feature cache when `cache_root` is given), with progress."""
    parts = []
    total = -(-len(records) // chunk)
    started = time.perf_counter()
    read = feature_reader(model.encoder_state, model.settings, cache_root)
    for i in range(total):
        features = read(records[i * chunk : (i + 1) * chunk])
        parts.append(predict_features(model.classifier, features[:, 0], model.temperature))
        reporter.step("predict", i + 1, total, {"seconds": time.perf_counter() - started})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def write_predictions(
    session: Session,
    version_id: int,
    case_ids: list[int],
    classes: list[str],
    out: dict[str, np.ndarray],
    coords: np.ndarray | None,
) -> None:
    """One prediction row per case of `case_ids` (in the order of `out`), with its UMAP position."""
    ids = class_ids(session)
    label_id = [ids[name] for name in classes]
    probs = out["probs"]
    top2 = np.sort(probs, 1)[:, -2:]
    rows = [
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
        for i, case_id in enumerate(case_ids)
    ]
    session.execute(insert(Prediction), rows)

"""Prediction: a model version's calibrated probabilities, uncertainty and features for cases,
and the prediction rows the screens read.

Every prediction row names the model version that made it, so rolling back to an older
version shows its predictions again without recomputing them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import insert
from sqlalchemy.orm import Session

from mics_core.data import PairRecord
from mics_core.db.models import Prediction
from mics_core.features import token_reader
from mics_core.labels import class_ids
from mics_core.model.calibration import apply_temperature
from mics_core.model.checkpoint import MICSModel
from mics_core.model.fusion import FusionClassifier
from mics_core.progress import SILENT, Reporter

__all__ = ["predict", "predict_tokens", "write_predictions"]


def predict_tokens(
    model: FusionClassifier, tokens: torch.Tensor, temperature: float = 1.0, batch: int = 512
) -> dict[str, np.ndarray]:
    """Predictions for (N, 2, T, C) tokens; probabilities calibrated with `temperature`."""
    model.eval()
    device = next(model.parameters()).device
    parts: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(tokens), batch):
        chunk = tokens[start : start + batch].to(device)
        parts.append({k: v.cpu() for k, v in model.predict(chunk[:, 0], chunk[:, 1]).items()})
    out = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]} if parts else {}
    if out:
        out["probs"] = apply_temperature(torch.from_numpy(out["probs"]), temperature).numpy()
    return out


def predict(
    model: MICSModel,
    records: list[PairRecord],
    cache_root: Path | None = None,
    reporter: Reporter = SILENT,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Calibrated probabilities, fused and per-view uncertainty, conflict and z_f of each record,
    `chunk` records at a time (through the feature cache when `cache_root` is given), with progress."""
    parts = []
    total = -(-len(records) // chunk)
    started = time.perf_counter()
    read = token_reader(model.encoder_state, model.settings, cache_root)
    for i in range(total):
        tokens = read(records[i * chunk : (i + 1) * chunk])
        parts.append(predict_tokens(model.classifier, tokens, model.temperature))
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

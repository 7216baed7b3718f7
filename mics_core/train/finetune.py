"""The stage-2 loop: fusion fine-tuning on cached tokens, semi-supervised and calibrated.

Labelled pairs train the fusion encoder and the three evidential heads (WLI, NBI, fused);
with `shift` on, the fused head also sees z_f ⊕ s_w and z_f ⊕ s_n. With `semi_supervised`
on, after a warm-up (and every fifth epoch after it), unlabelled pairs whose combined prediction is confident (≥ the
threshold) and on which the WLI and NBI heads agree join as pseudo-labelled pairs, seen
through a stronger view (noise and modality dropout). A stratified share of the labelled
pairs is held out to fit the temperature and to report held-out metrics; with `refit` the
model is then trained again on every label.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mics_core.config import TrainSettings
from mics_core.metrics import evaluate, expected_calibration_error
from mics_core.model.calibration import apply_temperature, fit_temperature
from mics_core.model.evidential import evidential_loss
from mics_core.model.fusion import FusionClassifier
from mics_core.train.devices import resolve_device, seed_everything
from mics_core.train.progress import SILENT, Reporter


@dataclass
class FineTuned:
    model: FusionClassifier
    temperature: float
    metrics: dict[str, object] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def calibration_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of the labelled rows, stratified: at least one held out of each class
    with 3 or more labels (so a first model already reports held-out figures); smaller classes stay in train."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for y in np.unique(labels[labels >= 0]):
        rows = rng.permutation(np.flatnonzero(labels == y))
        n_held = max(1, int(len(rows) * fraction)) if len(rows) >= 3 else 0
        held += rows[:n_held].tolist()
        train += rows[n_held:].tolist()
    return np.sort(np.array(train, int)), np.sort(np.array(held, int))


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


def finetune(
    tokens: torch.Tensor,
    labels: np.ndarray,
    class_names: list[str],
    settings: TrainSettings,
    reporter: Reporter = SILENT,
) -> FineTuned:
    """Train on (N, 2, T, C) tokens with `labels` (class index, -1 = unlabelled).

    The temperature and the held-out metrics come from a model trained without the held-out
    labelled rows; with `settings.refit` the returned model is then trained again on every
    label (CalibratedClassifierCV with ensemble=False does so after cross-validation; this
    uses one held-out split): a few dozen labels are too few to leave a fifth of them out of
    the model a clinician uses.

    Raises:
        ValueError: fewer than two labelled classes.
    """
    start_time = time.perf_counter()
    labels = np.asarray(labels)
    if len(np.unique(labels[labels >= 0])) < 2:
        raise ValueError("fine-tuning needs labelled cases of at least two classes")
    train_idx, held_idx = calibration_split(labels, settings.calibration_fraction, settings.seed)
    rounds = [train_idx]
    if settings.refit and len(held_idx):
        rounds.append(np.flatnonzero(labels >= 0))
    total = sum(settings.finetune_epochs * _steps_per_epoch(len(rows), settings) for rows in rounds)
    history: list[dict[str, float]] = []

    def report(parts: dict[str, float]) -> None:
        history.append(parts)
        reporter.step("finetune", len(history), total, parts)

    model = _fit(tokens, labels, train_idx, len(class_names), settings, report)
    temperature, metrics = _calibrate(model, tokens, labels, held_idx, class_names)
    if len(rounds) > 1:
        model = _fit(tokens, labels, rounds[1], len(class_names), settings, report)
    return FineTuned(model.cpu().eval(), temperature, metrics, history, time.perf_counter() - start_time)


def _steps_per_epoch(n_labelled: int, settings: TrainSettings) -> int:
    return max(8, math.ceil(n_labelled / settings.finetune_batch))  # the evidential loss plateaus early


def _fit(
    tokens: torch.Tensor,
    labels: np.ndarray,
    train_idx: np.ndarray,
    n_classes: int,
    settings: TrainSettings,
    report: Callable[[dict[str, float]], None],
) -> FusionClassifier:
    """One training run of the fusion classifier on the labelled rows `train_idx` and every unlabelled row."""
    device = resolve_device(settings.device)
    generator = seed_everything(settings.seed)
    unlabelled_idx = np.flatnonzero(labels < 0)
    model = FusionClassifier(
        tokens.shape[-1],
        n_classes,
        settings.fusion_dim,
        settings.fusion_blocks,
        settings.fusion_heads,
        settings.shift_atoms,
    )
    model.fit_standardisation(tokens)
    pooled = tokens.mean(2)  # (N, 2, C)
    model.dictionary.fit(pooled.reshape(-1, pooled.shape[-1]).numpy(), settings.seed)
    y_all = torch.as_tensor(labels)
    model.dictionary.fit_classes(pooled[train_idx, 0], pooled[train_idx, 1], y_all[train_idx])
    model = model.to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.finetune_lr, weight_decay=settings.finetune_weight_decay
    )
    total = settings.finetune_epochs * _steps_per_epoch(len(train_idx), settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, total))))
    warmup = settings.finetune_epochs // 4
    pseudo_idx, pseudo_y = np.array([], int), np.array([], int)
    for epoch in range(settings.finetune_epochs):
        kl = settings.kl_weight * min(1.0, epoch / 10)
        if settings.semi_supervised and epoch >= warmup and (epoch - warmup) % 5 == 0 and len(unlabelled_idx):
            pseudo_idx, pseudo_y = _pseudo_labels(model, tokens, unlabelled_idx, settings.pseudo_threshold)
            model.train()
        for _ in range(_steps_per_epoch(len(train_idx), settings)):
            idx = train_idx[
                torch.randint(
                    len(train_idx), (min(settings.finetune_batch, len(train_idx)),), generator=generator
                ).numpy()
            ]
            loss, parts = _labelled_loss(model, tokens[idx].to(device), y_all[idx].to(device), settings, kl, generator)
            if len(pseudo_idx):
                u_loss = _pseudo_loss(model, tokens, pseudo_idx, pseudo_y, settings.finetune_batch, kl, generator)
                loss = loss + settings.w_unlabelled * u_loss
                parts["unlabelled"] = u_loss.item()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            report(parts | {"total": loss.item(), "pseudo_labelled": float(len(pseudo_idx))})
    return model


def _dropout(n: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    """(n, 2) bool: which view to replace by the "missing" tokens; never both."""
    drop_wli = torch.rand(n, generator=generator) < p / 2
    drop_nbi = (torch.rand(n, generator=generator) < p / 2) & ~drop_wli
    return torch.stack([drop_wli, drop_nbi], 1).to(device)


def _strong_view(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    scale = tokens.std() * 0.2
    return tokens + torch.randn(tokens.shape, generator=generator) * scale


def _pseudo_loss(
    model: FusionClassifier,
    tokens: torch.Tensor,
    rows: np.ndarray,
    targets: np.ndarray,
    batch: int,
    kl: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The fused head's loss on a batch of pseudo-labelled pairs seen through the strong view."""
    device = next(model.parameters()).device
    pick = torch.randint(len(rows), (batch,), generator=generator).numpy()
    strong = _strong_view(tokens[rows[pick]], generator).to(device)
    _, _, z_f = model.encode(strong[:, 0], strong[:, 1], _dropout(batch, 0.3, generator, device))
    return evidential_loss(model.head_fused(z_f), torch.as_tensor(targets[pick], device=device), kl).mean()


def _labelled_loss(
    model: FusionClassifier,
    tokens: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    kl: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    model.train()
    drop = _dropout(len(y), settings.modality_dropout, generator, tokens.device)
    h_w, h_n, z_f = model.encode(tokens[:, 0], tokens[:, 1], drop)
    fused = evidential_loss(model.head_fused(z_f), y, kl).mean()
    wli = (evidential_loss(model.head_wli(h_w), y, kl) * ~drop[:, 0]).mean()
    nbi = (evidential_loss(model.head_nbi(h_n), y, kl) * ~drop[:, 1]).mean()
    parts = {"fused": fused.item(), "wli": wli.item(), "nbi": nbi.item()}
    loss = fused + wli + nbi
    if settings.shift:
        s_w, s_n = model.shift_vectors(tokens[:, 0], tokens[:, 1], y, generator)
        shifted = 0.5 * (
            evidential_loss(model.head_fused(z_f + s_w), y, kl).mean()
            + evidential_loss(model.head_fused(z_f + s_n), y, kl).mean()
        )
        loss = loss + shifted
        parts["shifted"] = shifted.item()
    return loss, parts


def _pseudo_labels(
    model: FusionClassifier, tokens: torch.Tensor, candidates: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled rows whose combined prediction is confident and on which both views agree."""
    out = predict_tokens(model, tokens[candidates])
    predicted = out["probs"].argmax(1)
    keep = (out["probs"].max(1) >= threshold) & (out["pred_wli"] == predicted) & (out["pred_nbi"] == predicted)
    return candidates[keep], predicted[keep]


def _calibrate(
    model: FusionClassifier, tokens: torch.Tensor, labels: np.ndarray, held_idx: np.ndarray, class_names: list[str]
) -> tuple[float, dict[str, object]]:
    """Fit the temperature on the held-out labelled rows and report their metrics."""
    if len(held_idx) < 4:
        return 1.0, {}
    raw = predict_tokens(model, tokens[held_idx])
    y = labels[held_idx]
    temperature = fit_temperature(torch.from_numpy(raw["probs"]), torch.from_numpy(y))
    probs = apply_temperature(torch.from_numpy(raw["probs"]), temperature).numpy()
    metrics = evaluate(probs, y, class_names, confidence=1 - raw["uncertainty"])
    metrics |= {
        "ece_before_scaling": expected_calibration_error(raw["probs"], y),
        "temperature": temperature,
        # the held-out rows themselves, for the Model quality screen's plots
        "held_out": {
            "target": y.tolist(),
            "probs": np.round(probs, 5).tolist(),
            "probs_before_scaling": np.round(raw["probs"], 5).tolist(),
            "confidence": np.round(1 - raw["uncertainty"], 5).tolist(),
        },
    }
    return temperature, metrics

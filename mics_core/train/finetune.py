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
from dataclasses import dataclass, field

import numpy as np
import torch

from mics_core.config import FinetuneSettings, TrainSettings
from mics_core.devices import resolve_device, seed_everything
from mics_core.metrics import evaluate, expected_calibration_error
from mics_core.model.calibration import apply_temperature, fit_temperature
from mics_core.model.evidential import evidential_loss
from mics_core.model.fusion import FusionClassifier
from mics_core.predict import predict_tokens
from mics_core.progress import SILENT, Reporter
from mics_core.train.loop import Method, cosine_schedule, run


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


def finetune(
    tokens: torch.Tensor,
    labels: np.ndarray,
    class_names: list[str],
    settings: TrainSettings,
    reporter: Reporter = SILENT,
) -> FineTuned:
    """Train on (N, 2, T, C) tokens with `labels` (class index, -1 = unlabelled).

    The temperature and the held-out metrics come from a model trained without the held-out
    labelled rows; with `refit` the returned model is then trained again on every label
    (CalibratedClassifierCV with ensemble=False does so after cross-validation; this uses one
    held-out split): a few dozen labels are too few to leave a fifth of them out of the model a
    clinician uses.

    Raises:
        ValueError: fewer than two labelled classes.
    """
    start_time = time.perf_counter()
    labels = np.asarray(labels)
    if len(np.unique(labels[labels >= 0])) < 2:
        raise ValueError("fine-tuning needs labelled cases of at least two classes")
    part = settings.finetune
    train_idx, held_idx = calibration_split(labels, part.calibration_fraction, settings.seed)
    rounds = [train_idx] + ([np.flatnonzero(labels >= 0)] if part.refit and len(held_idx) else [])
    total = sum(part.epochs * steps_per_epoch(len(rows), part) for rows in rounds)
    history: list[dict[str, float]] = []
    for i, rows in enumerate(rounds):
        method = FusionFinetuning(tokens, labels, rows, len(class_names), settings)
        history += run(method, method.steps, reporter.within(len(history), total)).history
        if i == 0:
            temperature, metrics = _calibrate(method.model, tokens, labels, held_idx, class_names)
    model = method.model
    return FineTuned(model.cpu().eval(), temperature, metrics, history, time.perf_counter() - start_time)


def steps_per_epoch(n_labelled: int, part: FinetuneSettings) -> int:
    return max(8, math.ceil(n_labelled / part.batch))  # the evidential loss plateaus early


class FusionFinetuning(Method):
    """Stage 2 as a `Method`: the fusion classifier on the labelled rows `train_idx`, with
    pseudo-labelled unlabelled rows after a warm-up (refreshed every fifth epoch)."""

    phase = "finetune"

    def __init__(
        self, tokens: torch.Tensor, labels: np.ndarray, train_idx: np.ndarray, n_classes: int, settings: TrainSettings
    ) -> None:
        part = self.part = settings.finetune
        self.device = resolve_device(settings.device)
        self.generator = seed_everything(settings.seed)
        self.tokens, self.train_idx = tokens, train_idx
        self.unlabelled_idx = np.flatnonzero(labels < 0)
        self.y = torch.as_tensor(labels)
        model = FusionClassifier.from_settings(tokens.shape[-1], n_classes, part)
        model.fit_standardisation(tokens)
        pooled = tokens.mean(2)  # (N, 2, C)
        model.dictionary.fit(pooled.reshape(-1, pooled.shape[-1]).numpy(), settings.seed)
        model.dictionary.fit_classes(pooled[train_idx, 0], pooled[train_idx, 1], self.y[train_idx])
        self.model = model.to(self.device)
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=part.lr, weight_decay=part.weight_decay)
        self.per_epoch = steps_per_epoch(len(train_idx), part)
        self.steps = part.epochs * self.per_epoch
        self.schedule = cosine_schedule(self.optimiser, self.steps)
        self.warmup = part.epochs // 4
        self.pseudo_idx, self.pseudo_y = np.array([], int), np.array([], int)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        part, epoch = self.part, step // self.per_epoch
        kl = part.kl_weight * min(1.0, epoch / 10)
        refresh = step % self.per_epoch == 0 and epoch >= self.warmup and (epoch - self.warmup) % 5 == 0
        if part.semi_supervised and refresh and len(self.unlabelled_idx):
            self.pseudo_idx, self.pseudo_y = _pseudo_labels(
                self.model, self.tokens, self.unlabelled_idx, part.pseudo_threshold
            )
        draw = torch.randint(len(self.train_idx), (min(part.batch, len(self.train_idx)),), generator=self.generator)
        idx = self.train_idx[draw.numpy()]
        losses = _labelled_losses(
            self.model, self.tokens[idx].to(self.device), self.y[idx].to(self.device), part, kl, self.generator
        )
        total = sum(losses.values())
        if len(self.pseudo_idx):
            losses["unlabelled"] = _pseudo_loss(
                self.model, self.tokens, self.pseudo_idx, self.pseudo_y, part.batch, kl, self.generator
            )
            total = total + part.w_unlabelled * losses["unlabelled"]
        n_pseudo = torch.tensor(float(len(self.pseudo_idx)))
        return losses | {"total": total, "pseudo_labelled": n_pseudo}


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


def _labelled_losses(
    model: FusionClassifier,
    tokens: torch.Tensor,
    y: torch.Tensor,
    part: FinetuneSettings,
    kl: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The three heads' losses on a labelled batch, and the shifted features' loss with `shift` on."""
    model.train()
    drop = _dropout(len(y), part.modality_dropout, generator, tokens.device)
    h_w, h_n, z_f = model.encode(tokens[:, 0], tokens[:, 1], drop)
    losses = {
        "fused": evidential_loss(model.head_fused(z_f), y, kl).mean(),
        "wli": (evidential_loss(model.head_wli(h_w), y, kl) * ~drop[:, 0]).mean(),
        "nbi": (evidential_loss(model.head_nbi(h_n), y, kl) * ~drop[:, 1]).mean(),
    }
    if part.shift:
        s_w, s_n = model.shift_vectors(tokens[:, 0], tokens[:, 1], y, generator)
        losses["shifted"] = 0.5 * (
            evidential_loss(model.head_fused(z_f + s_w), y, kl).mean()
            + evidential_loss(model.head_fused(z_f + s_n), y, kl).mean()
        )
    return losses


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

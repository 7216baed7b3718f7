"""Stage 2: fusion fine-tuning on cached pooled features, semi-supervised and calibrated.

One `FusionFinetuning` run trains a `FusionHead` of a given size: the labelled pairs (their
own images, with modality dropout and, with `shift` on, the shift dictionary's moves) teach
the fused, WLI and NBI classifiers; each unlabelled pair's weak view gives a pseudo-label
when the calibrated fused probability reaches the threshold, and its strong view learns it
in all three classifiers (FixMatch, Sohn et al. 2020, on views encoded once).

`finetune` chooses the head's size and the temperature from out-of-fold predictions of
every label (k-fold; the held-out fold joins the unlabelled pool), then trains the chosen
head on every label: a few dozen labels are too few to hold a fifth of them out of the model
a clinician uses, or to fit a temperature on a dozen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mics_core.config import TrainSettings
from mics_core.devices import resolve_device, seed_everything
from mics_core.metrics import evaluate, expected_calibration_error
from mics_core.model.calibration import fit_temperature
from mics_core.model.heads import FusionHead, HeadEnsemble
from mics_core.progress import SILENT, Reporter
from mics_core.train.loop import Method, cosine_schedule, run


@dataclass
class FineTuned:
    model: HeadEnsemble
    temperature: float
    metrics: dict[str, object] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each labelled row's fold (stratified, at most `folds`, and no more than the smallest class
    with two labels allows); -1 for unlabelled rows and for classes with one label, which always train."""
    rng = np.random.default_rng(seed)
    counts = [int((labels == y).sum()) for y in np.unique(labels[labels >= 0])]
    k = min([folds, *[c for c in counts if c >= 2]]) if any(c >= 2 for c in counts) else 0
    fold = np.full(len(labels), -1)
    if k < 2:
        return fold
    for y in np.unique(labels[labels >= 0]):
        rows = rng.permutation(np.flatnonzero(labels == y))
        if len(rows) >= 2:
            fold[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
    return fold


def finetune(
    features: torch.Tensor,
    labels: np.ndarray,
    class_names: list[str],
    settings: TrainSettings,
    reporter: Reporter = SILENT,
) -> FineTuned:
    """Train on (N, 1 + 2 * views, 2, C) features with `labels` (class index, -1 = unlabelled).

    Raises:
        ValueError: fewer than two labelled classes.
    """
    started = time.perf_counter()
    labels = np.asarray(labels)
    if len(np.unique(labels[labels >= 0])) < 2:
        raise ValueError("fine-tuning needs labelled cases of at least two classes")
    part = settings.finetune
    fold = fold_assignment(labels, part.folds, settings.seed)
    k = fold.max() + 1
    candidates = part.heads if k >= 2 else part.heads[:1]
    runs = len(candidates) * k if k >= 2 else 1
    history: list[dict[str, float]] = []

    def train(train_labels: np.ndarray, hidden: int) -> FusionHead:
        method = FusionFinetuning(features, train_labels, hidden, len(class_names), settings)
        history.extend(run(method, part.steps, reporter.within(len(history), runs * part.steps)).history)
        return method.model

    scored = fold >= 0
    out_of_fold = {hidden: torch.zeros(int(scored.sum()), len(class_names)) for hidden in candidates}
    members: dict[int, list[FusionHead]] = {hidden: [] for hidden in candidates}
    for hidden in candidates if k >= 2 else ():
        for f in range(k):
            held = fold == f
            members[hidden].append(train(np.where(held, -1, labels), hidden))
            out_of_fold[hidden][held[scored]] = members[hidden][-1].predict(features[held, 0])["logits"].cpu()
    if k < 2:  # too few labels to hold any out: one model, uncalibrated
        model = HeadEnsemble([train(labels, candidates[0])]).cpu().eval()
        metrics = {"head": model.description, "head_hidden": model.hidden, "folds": 0}
        return FineTuned(model, 1.0, metrics, history, time.perf_counter() - started)
    y = torch.as_tensor(labels[scored])
    losses = {hidden: _calibrated_log_loss(logits, y) for hidden, logits in out_of_fold.items()}
    choice = min(losses, key=lambda hidden: losses[hidden][0])
    temperature = losses[choice][1]
    model = HeadEnsemble(members[choice]).cpu().eval()
    metrics = _out_of_fold_metrics(out_of_fold[choice], y.numpy(), temperature, class_names)
    metrics |= {"head": model.description, "head_hidden": choice, "folds": int(k)}
    metrics["head_log_loss"] = {str(hidden): loss for hidden, (loss, _) in losses.items()}
    return FineTuned(model, temperature, metrics, history, time.perf_counter() - started)


def _calibrated_log_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(log-loss after temperature scaling, the temperature) of out-of-fold logits."""
    temperature = fit_temperature(F.softmax(logits, 1), y)
    return float(F.cross_entropy(logits / temperature, y)), temperature


def _out_of_fold_metrics(
    logits: torch.Tensor, y: np.ndarray, temperature: float, class_names: list[str]
) -> dict[str, object]:
    """Every label's out-of-fold figures, and the rows themselves for the Model quality plots.
    The temperature was fitted on these same predictions, so their ECE after scaling flatters."""
    raw = F.softmax(logits, 1).numpy()
    probs = F.softmax(logits / temperature, 1).numpy()
    metrics = evaluate(probs, y, class_names)
    return metrics | {
        "ece_before_scaling": expected_calibration_error(raw, y),
        "temperature": temperature,
        "held_out": {
            "target": y.tolist(),
            "probs": np.round(probs, 5).tolist(),
            "probs_before_scaling": np.round(raw, 5).tolist(),
            "confidence": np.round(probs.max(1), 5).tolist(),
        },
    }


def _drop_modality(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero (the standardised mean) one view of a share `p` of the pairs, never both: the fused
    classifier must not lean on one modality alone."""
    drop = torch.rand(len(x), generator=generator) < p
    which = (torch.rand(len(x), generator=generator) < 0.5).long()
    mask = torch.ones(len(x), 2, 1)
    mask[drop, which[drop]] = 0
    return x * mask.to(x.device)


class FusionFinetuning(Method):
    """Stage 2 as a `Method`: a `FusionHead` of width `hidden` on the labelled rows of `labels`,
    with FixMatch consistency on the unlabelled rows' cached weak and strong views."""

    phase = "finetune"

    def __init__(
        self,
        features: torch.Tensor,
        labels: np.ndarray,
        hidden: int,
        n_classes: int,
        settings: TrainSettings,
    ) -> None:
        part = self.part = settings.finetune
        device = resolve_device(settings.device)
        self.generator = seed_everything(settings.seed)
        model = FusionHead(features.shape[-1], n_classes, hidden, part.shift_atoms)
        model.fit_statistics(features[:, 0])
        self.x = model.standardise(features)
        self.views = (features.shape[1] - 1) // 2
        self.labelled, self.unlabelled = np.flatnonzero(labels >= 0), np.flatnonzero(labels < 0)
        self.y = torch.as_tensor(labels)
        if part.shift:
            model.dictionary.fit(self.x[:, 0].reshape(-1, self.x.shape[-1]).numpy(), settings.seed)
            own = self.x[self.labelled, 0]
            model.dictionary.fit_classes(own[:, 0], own[:, 1], self.y[self.labelled])
        self.x, self.y, self.model = self.x.to(device), self.y.to(device), model.to(device)
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=part.lr, weight_decay=part.weight_decay)
        self.schedule = cosine_schedule(self.optimiser, part.steps)

    def _draw(self, rows: np.ndarray, n: int) -> np.ndarray:
        return rows[torch.randint(len(rows), (n,), generator=self.generator).numpy()]

    def _view(self, low: int, high: int, n: int) -> np.ndarray:
        return torch.randint(low, high, (n,), generator=self.generator).numpy()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        part, model = self.part, self.model
        rows = self._draw(self.labelled, part.batch)
        x, y = self.x[rows, 0], self.y[rows]
        if part.shift:
            x = model.dictionary.shifted(x, y, self.generator)
        model.train()
        fused, wli, nbi = model(_drop_modality(x, part.modality_dropout, self.generator))
        losses = {"fused": F.cross_entropy(fused, y), "views": F.cross_entropy(wli, y) + F.cross_entropy(nbi, y)}
        total = losses["fused"] + part.w_views * losses["views"]
        if part.semi_supervised and len(self.unlabelled) and self.views:
            unlabelled = self._draw(self.unlabelled, part.unlabelled_batch)
            n = len(unlabelled)
            with torch.no_grad():
                model.eval()
                probs = F.softmax(model(self.x[unlabelled, self._view(0, 1 + self.views, n)])[0], 1)
                model.train()
                confidence, target = probs.max(1)
                keep = (confidence >= part.pseudo_threshold).float()
            strong = model(self.x[unlabelled, self._view(1 + self.views, 1 + 2 * self.views, n)])
            per_case = [F.cross_entropy(logits, target, reduction="none") for logits in strong]
            losses["unlabelled"] = ((per_case[0] + part.w_views * (per_case[1] + per_case[2])) * keep).mean()
            losses["pseudo_labelled"] = keep.mean()
            total = total + part.w_unlabelled * losses["unlabelled"]
        return losses | {"total": total}

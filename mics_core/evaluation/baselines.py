"""The benchmark's end-to-end baselines, trained on images (not cached features).

- `supervised`: WLI and NBI encoders from scratch on the labelled pairs only, late fusion
  (mean of the two heads' logits);
- `fixmatch_wli`: FixMatch (Sohn et al., 2020) on WLI only: pseudo-labels from a weak
  view above a 0.95 confidence threshold teach the strong view of unlabelled images.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mics_core.config import TrainSettings
from mics_core.data import augment
from mics_core.model.backbones import create_encoder, normalise
from mics_core.train.devices import resolve_device, seed_everything


class ImageClassifier(nn.Module):
    def __init__(self, settings: TrainSettings, n_classes: int) -> None:
        super().__init__()
        self.encoder = create_encoder(settings.backbone, settings.image_size, settings.weights)
        self.head = nn.Linear(self.encoder.dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(normalise(images)).mean(1))


def strong_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Weak geometry plus colour jitter and a cut-out square (FixMatch's strong view, simplified)."""
    images = augment(batch, generator)
    n = len(images)
    gain = torch.empty(n, 3, 1, 1).uniform_(0.7, 1.3, generator=generator)
    bias = torch.empty(n, 1, 1, 1).uniform_(-30, 30, generator=generator)
    images = (images * gain + bias).clamp(0, 255)
    size = images.shape[-1]
    side = size // 3
    for i in range(n):
        top, left = (int(torch.randint(size - side, (1,), generator=generator)) for _ in range(2))
        images[i, :, top : top + side, left : left + side] = 127
    return images


def _fit(
    model: nn.Module,
    settings: TrainSettings,
    n_labelled: int,
    time_limit: float | None,
    step_loss: Callable[[torch.Tensor, torch.Generator, torch.device], torch.Tensor],
) -> nn.Module:
    """The one optimiser loop of the baselines; each baseline only says how a batch's loss is made.

    Runs `settings.baseline_steps` steps, or until `time_limit` seconds.
    """
    device = resolve_device(settings.device)
    generator = seed_everything(settings.seed)
    model = model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.pretrain_lr * 3, weight_decay=0.05)
    batch = min(settings.finetune_batch, n_labelled)
    start = time.perf_counter()
    for _ in range(settings.baseline_steps):
        loss = step_loss(torch.randint(n_labelled, (batch,), generator=generator), generator, device)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
    return model.eval()


def train_supervised(
    images: torch.Tensor, labels: torch.Tensor, n_classes: int, settings: TrainSettings, time_limit: float | None = None
) -> nn.ModuleList:
    """Two image classifiers (WLI, NBI) trained from scratch on labelled pairs (N, 2, 3, H, W)."""
    seed_everything(settings.seed)
    models = nn.ModuleList([ImageClassifier(settings, n_classes) for _ in range(2)])

    def step_loss(idx: torch.Tensor, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        y = labels[idx].to(device)
        return sum(F.cross_entropy(models[m](augment(images[idx, m], generator).to(device)), y) for m in range(2))

    return _fit(models, settings, len(images), time_limit, step_loss)


def train_fixmatch(
    images: torch.Tensor,
    labels: torch.Tensor,
    unlabelled: torch.Tensor,
    n_classes: int,
    settings: TrainSettings,
    threshold: float = 0.95,
    ratio: int = 2,
    time_limit: float | None = None,
) -> ImageClassifier:
    """A WLI classifier trained with FixMatch; `images` and `unlabelled` are (N, 3, H, W) uint8."""
    seed_everything(settings.seed)
    model = ImageClassifier(settings, n_classes)

    def step_loss(idx: torch.Tensor, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        loss = F.cross_entropy(model(augment(images[idx], generator).to(device)), labels[idx].to(device))
        if len(unlabelled):
            u_idx = torch.randint(len(unlabelled), (len(idx) * ratio,), generator=generator)
            with torch.no_grad():
                confidence, pseudo = F.softmax(model(augment(unlabelled[u_idx], generator).to(device)), 1).max(1)
            strong = model(strong_augment(unlabelled[u_idx], generator).to(device))
            loss = loss + (F.cross_entropy(strong, pseudo, reduction="none") * (confidence >= threshold)).mean()
        return loss

    return _fit(model, settings, len(images), time_limit, step_loss)


@torch.no_grad()
def predict_images(models: list[nn.Module], images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Softmax of the mean logits of `models[i]` applied to `images[i]` (late fusion)."""
    out = []
    for start in range(0, len(images[0]), 128):
        logits = [m(x[start : start + 128].float().to(device)) for m, x in zip(models, images, strict=True)]
        out.append(F.softmax(torch.stack(logits).mean(0), 1).cpu())
    return torch.cat(out)

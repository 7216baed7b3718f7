"""The benchmark's end-to-end baselines, trained on images (not cached features).

- `Supervised`: WLI and NBI encoders from scratch on the labelled pairs only, late fusion
  (mean of the two heads' logits);
- `FixMatch`: FixMatch (Sohn et al., 2020) on WLI only: pseudo-labels from a weak view
  above a 0.95 confidence threshold teach the strong view of unlabelled images.

Each is a `Method` of the one training loop (`mics_core.train.loop`).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from mics_core.config import TrainSettings
from mics_core.data import augment
from mics_core.devices import resolve_device, seed_everything
from mics_core.model.backbones import create_encoder
from mics_core.progress import SILENT, Reporter
from mics_core.train.loop import Method, run


class ImageClassifier(nn.Module):
    def __init__(self, settings: TrainSettings, n_classes: int) -> None:
        super().__init__()
        part = settings.pretrain
        self.encoder = create_encoder(part.backbone, part.image_size, part.weights)
        self.head = nn.Linear(self.encoder.dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.encoder.normalise(images)).mean(1))


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


class ImageBaseline(Method):
    """A baseline trained end to end on images: each subclass says how a batch's loss is made
    from the labelled rows `idx` it is given."""

    phase = "baseline"

    def __init__(self, model: nn.Module, settings: TrainSettings, n_labelled: int) -> None:
        self.device = resolve_device(settings.device)
        self.generator = seed_everything(settings.seed)
        self.model = model.to(self.device).train()
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=settings.baseline.lr, weight_decay=0.05)
        self.n_labelled, self.batch = n_labelled, min(settings.baseline.batch, n_labelled)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        return {"total": self.loss(torch.randint(self.n_labelled, (self.batch,), generator=self.generator))}

    @abstractmethod
    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The loss of a batch of the labelled rows `idx`."""


class Supervised(ImageBaseline):
    """WLI and NBI classifiers from scratch on the labelled pairs (N, 2, 3, H, W), late fusion."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, n_classes: int, settings: TrainSettings) -> None:
        seed_everything(settings.seed)
        super().__init__(nn.ModuleList([ImageClassifier(settings, n_classes) for _ in range(2)]), settings, len(images))
        self.images, self.labels = images, labels

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        y = self.labels[idx].to(self.device)
        views = (augment(self.images[idx, m], self.generator).to(self.device) for m in range(2))
        return sum(F.cross_entropy(model(x), y) for model, x in zip(self.model, views, strict=True))


class FixMatch(ImageBaseline):
    """FixMatch on WLI (N, 3, H, W): pseudo-labels of a weak view above `threshold` teach the strong view."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        unlabelled: torch.Tensor,
        n_classes: int,
        settings: TrainSettings,
        threshold: float = 0.95,
        ratio: int = 2,
    ) -> None:
        seed_everything(settings.seed)
        super().__init__(ImageClassifier(settings, n_classes), settings, len(images))
        self.images, self.labels, self.unlabelled = images, labels, unlabelled
        self.threshold, self.ratio = threshold, ratio

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        model, g, device = self.model, self.generator, self.device
        loss = F.cross_entropy(model(augment(self.images[idx], g).to(device)), self.labels[idx].to(device))
        if len(self.unlabelled):
            u_idx = torch.randint(len(self.unlabelled), (len(idx) * self.ratio,), generator=g)
            with torch.no_grad():
                confidence, pseudo = F.softmax(model(augment(self.unlabelled[u_idx], g).to(device)), 1).max(1)
            strong = model(strong_augment(self.unlabelled[u_idx], g).to(device))
            loss = loss + (F.cross_entropy(strong, pseudo, reduction="none") * (confidence >= self.threshold)).mean()
        return loss


def train_baseline(
    method: ImageBaseline, settings: TrainSettings, reporter: Reporter = SILENT, time_limit: float | None = None
) -> nn.Module:
    """`settings.baseline.steps` steps of `method`, or until `time_limit` seconds; the trained model."""
    run(method, settings.baseline.steps, reporter, time_limit)
    return method.model.eval()


@torch.no_grad()
def predict_images(models: list[nn.Module], images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Softmax of the mean logits of `models[i]` applied to `images[i]` (late fusion)."""
    out = []
    for start in range(0, len(images[0]), 128):
        logits = [m(x[start : start + 128].float().to(device)) for m, x in zip(models, images, strict=True)]
        out.append(F.softmax(torch.stack(logits).mean(0), 1).cpu())
    return torch.cat(out)

"""The stage-1 loop: synergistic pre-training of both encoders on all pairs, no labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mics_core.config import TrainSettings
from mics_core.data import pair_views
from mics_core.devices import autocast, resolve_device, seed_everything
from mics_core.model.pretraining import MODALITIES, SynergisticPretrainer
from mics_core.progress import SILENT, Reporter
from mics_core.train.loop import Method, cosine_schedule, run


@dataclass
class Pretrained:
    """The encoders' weights after stage 1 and the loss history (one dict per step)."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def final_losses(self, steps: int = 10) -> dict[str, float]:
        """Each loss averaged over the last `steps` steps: where stage 1 ended, less the step noise."""
        tail = self.history[-steps:]
        return {name: sum(record[name] for record in tail) / len(tail) for name in tail[0]} if tail else {}


def cross_modal_check(images: torch.Tensor, settings: TrainSettings) -> Pretrained:
    """Stage 1's contrastive terms alone for 8 epochs at batch 16, no colour jitter: the quickest
    test of whether a backbone can learn to match the two views of a pair at all (chance is ln 16).
    A backbone that stays at chance here only makes its features worse in full pre-training."""
    quick = settings.replace(
        pretrain_batch=16,
        pretrain_epochs=8,
        queue_size=64,
        colour_jitter=0.0,
        w_reconstruction=0.0,
        w_adversarial=0.0,
    )
    return pretrain(images, quick)


class SynergisticPretraining(Method):
    """Stage 1 as a `Method`: the generator-side losses each step, then the discriminator's
    step and the momentum update. Under torch.distributed every rank trains its share of each
    batch, with one batch order on every rank but its own augmentations and masks."""

    phase = "pretrain"

    def __init__(self, images: torch.Tensor, settings: TrainSettings) -> None:
        if len(images) < 2:
            raise ValueError("pre-training needs at least two image pairs")
        distributed = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        self.images, self.settings, part = images, settings, settings.pretrain
        self.device = resolve_device(settings.device)
        self.shuffle = self.generator = seed_everything(settings.seed)
        if distributed:
            self.generator = torch.Generator().manual_seed(settings.seed + 1 + self.rank)
        self.model = SynergisticPretrainer(settings.pretrain).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = (
            DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
            if distributed
            else self.model
        )
        self.optimiser = torch.optim.AdamW(self.model.generator_parameters(), lr=part.lr, weight_decay=0.05)
        self.d_optimiser = torch.optim.AdamW(self.model.discriminator.parameters(), lr=part.lr, betas=(0.5, 0.999))
        self.batch = min(part.batch, len(images))
        if self.batch < 2 * self.world:  # every process needs two pairs (contrastive negatives, batch norm)
            raise ValueError(f"a batch of {self.batch} pairs cannot be split over {self.world} processes (2 each)")
        self.per_epoch = max(1, len(images) // self.batch)
        self.steps = part.epochs * self.per_epoch
        self.schedule = cosine_schedule(self.optimiser, self.steps)
        self.model.train()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        if step % self.per_epoch == 0:
            self.order = torch.randperm(len(self.images), generator=self.shuffle)
        b = step % self.per_epoch
        idx = self.order[b * self.batch : (b + 1) * self.batch][self.rank :: self.world]
        views = pair_views(self.images[idx], self.generator, self.settings.pretrain.colour_jitter)
        wli, nbi = (self.model.encoders[m].normalise(v.to(self.device)) for m, v in zip(MODALITIES, views, strict=True))
        with autocast(self.device):
            losses, self.recon, self.real = self.step_model(wli, nbi, self.generator)
            return losses | {"total": self.model.total(losses)}

    def after_step(self, step: int) -> dict[str, float]:
        with autocast(self.device):
            d_loss = self.step_model(discriminate=(self.recon.float(), self.real))
        self.d_optimiser.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimiser.step()
        self.model.after_step()
        return {"discriminator": d_loss.item()}

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.encoders.state_dict().items()}


def pretrain(images: torch.Tensor, settings: TrainSettings, reporter: Reporter = SILENT) -> Pretrained:
    """Pre-train on `images` (N, 2, 3, H, W) uint8 pairs; returns the two encoders' state dict.

    Raises:
        ValueError: fewer than two pairs (contrastive losses need negatives).
    """
    method = SynergisticPretraining(images, settings)
    result = run(method, method.steps, reporter if method.rank == 0 else SILENT)
    return Pretrained(method.encoder_state(), result.history, result.seconds)

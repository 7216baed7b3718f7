"""The stage-1 loop: synergistic pre-training of both encoders on all pairs, no labels."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mics_core.config import TrainSettings
from mics_core.data import pair_views
from mics_core.model.backbones import normalise
from mics_core.model.pretraining import SynergisticPretrainer
from mics_core.train.devices import autocast, resolve_device, seed_everything
from mics_core.train.progress import SILENT, Reporter


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
    return pretrain(
        images,
        replace(
            settings,
            pretrain_batch=16,
            pretrain_epochs=8,
            queue_size=64,
            colour_jitter=0.0,
            w_reconstruction=0.0,
            w_adversarial=0.0,
        ),
    )


def pretrain(images: torch.Tensor, settings: TrainSettings, reporter: Reporter = SILENT) -> Pretrained:
    """Pre-train on `images` (N, 2, 3, H, W) uint8 pairs; returns the two encoders' state dict.

    Raises:
        ValueError: fewer than two pairs (contrastive losses need negatives).
    """
    if len(images) < 2:
        raise ValueError("pre-training needs at least two image pairs")
    start = time.perf_counter()
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = resolve_device(settings.device)
    generator = seed_everything(settings.seed)
    model = SynergisticPretrainer(settings).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    shuffle = generator
    if distributed:  # one batch order on every rank, but each rank its own augmentations and masks
        shuffle, generator = generator, torch.Generator().manual_seed(settings.seed + 1 + rank)
    step_model = (
        DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
        if distributed
        else model
    )
    optimiser = torch.optim.AdamW(model.generator_parameters(), lr=settings.pretrain_lr, weight_decay=0.05)
    d_optimiser = torch.optim.AdamW(model.discriminator.parameters(), lr=settings.pretrain_lr, betas=(0.5, 0.999))
    batch = min(settings.pretrain_batch, len(images))
    if batch < 2 * world:  # every process needs two pairs (contrastive negatives, batch norm)
        raise ValueError(f"a batch of {batch} pairs cannot be split over {world} processes (2 each at least)")
    per_epoch = max(1, len(images) // batch)
    total = settings.pretrain_epochs * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, total))))
    history: list[dict[str, float]] = []
    model.train()
    step = 0
    for _ in range(settings.pretrain_epochs):
        order = torch.randperm(len(images), generator=shuffle)
        for b in range(per_epoch):
            idx = order[b * batch : (b + 1) * batch][rank::world]
            wli, nbi = (normalise(v.to(device)) for v in pair_views(images[idx], generator, settings.colour_jitter))
            with autocast(device):
                losses, recon, real = step_model(wli, nbi, generator)
                loss = model.total(losses)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            with autocast(device):
                d_loss = step_model(discriminate=(recon.float(), real))
            d_optimiser.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimiser.step()
            model.after_step()
            step += 1
            record = {name: value.item() for name, value in losses.items()}
            record |= {"total": loss.item(), "discriminator": d_loss.item()}
            history.append(record)
            if rank == 0:
                reporter.step("pretrain", step, total, record)
    state = {k: v.detach().cpu().contiguous() for k, v in model.encoders.state_dict().items()}
    return Pretrained(state, history, time.perf_counter() - start)

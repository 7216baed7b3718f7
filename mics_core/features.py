"""Frozen-encoder features, computed once per (encoder weights, image content) and cached.

Each case is kept as its pooled features under `1 + 2 * views` views: the image itself, then
`views` weak views (crop and flips) and `views` strong ones (the same plus RandAugment), one
geometry for both modalities of a pair. Fine-tuning on a new round of labels then reads them
from disk instead of running the encoders, which is what makes a retrain take seconds on a CPU,
and the augmented views give the unlabelled pairs' consistency training real image-space views.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from mics_core.config import TrainSettings
from mics_core.data import PairRecord, load_pairs
from mics_core.devices import autocast, resolve_device
from mics_core.model.backbones import create_encoder
from mics_core.model.pretraining import MODALITIES
from mics_core.store import atomic_write


def encoder_fingerprint(state: dict[str, torch.Tensor], settings: TrainSettings) -> str:
    """A hash of what the features depend on, the backbone, input size and encoder weights: the cache's
    namespace. Not the seed: ImageNet encoders are the same for every seed, and their features too."""
    digest = hashlib.sha256(f"{settings.pretrain.backbone}@{settings.pretrain.image_size}".encode())
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def build_encoders(state: dict[str, torch.Tensor] | None, settings: TrainSettings) -> nn.ModuleDict:
    """The WLI and NBI encoders with `state` loaded (their initial weights when None: random or
    `settings.pretrain.weights`), in eval mode."""
    part = settings.pretrain
    initial = part.weights if state is None else None
    encoders = nn.ModuleDict({m: create_encoder(part.backbone, part.image_size, initial) for m in MODALITIES})
    if state is not None:
        encoders.load_state_dict(state)
    return encoders.eval()


def view_transforms(size: int) -> tuple[v2.Transform, v2.Transform]:
    """(weak, strong) augmentations of a (2, 3, H, W) uint8 pair, one draw for both images."""
    weak = v2.Compose(
        [v2.RandomResizedCrop(size, scale=(0.5, 1.0)), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    )
    return weak, v2.Compose([weak, v2.RandAugment(num_ops=2, magnitude=9)])


def pair_views(pairs: torch.Tensor, records: list[PairRecord], views: int) -> torch.Tensor:
    """(N, 1 + 2 * views, 2, 3, H, W): each pair, its weak views, its strong views. The draws are
    seeded by the image content, so a case's views are the same whoever encodes them."""
    weak, strong = view_transforms(pairs.shape[-1])
    out = []
    with torch.random.fork_rng():  # the transforms draw from the global generator: leave it as it was
        for pair, record in zip(pairs, records, strict=True):
            torch.manual_seed(int(record.content[:15], 16))
            out.append(torch.stack([pair] + [weak(pair) for _ in range(views)] + [strong(pair) for _ in range(views)]))
    return torch.stack(out)


@torch.no_grad()
def encode_pairs(encoders: nn.ModuleDict, images: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    """(N, 2, C) pooled float features of (N, 2, 3, H, W) uint8 pairs."""
    encoders = encoders.to(device)
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch].to(device)
        with autocast(device):
            pooled = [encoders[m](encoders[m].normalise(chunk[:, i])).mean(1) for i, m in enumerate(MODALITIES)]
        out.append(torch.stack(pooled, 1).float().cpu())
    return torch.cat(out)


def encode_views(
    encoders: nn.ModuleDict, records: list[PairRecord], settings: TrainSettings, views: int | None = None
) -> torch.Tensor:
    """(N, 1 + 2 * views, 2, C) pooled features of every view of `records` (`views` defaults to the setting's)."""
    views = settings.finetune.views if views is None else views
    device = resolve_device(settings.device)
    images = pair_views(load_pairs(records, settings.pretrain.image_size), records, views)
    return encode_pairs(encoders, images.flatten(0, 1), device).unflatten(0, images.shape[:2])


class FeatureCache:
    """Feature arrays on disk at `root/<encoder fingerprint>-v<views>/<content key>.npy` (float16)."""

    def __init__(self, root: Path, fingerprint: str, views: int) -> None:
        self.folder = Path(root) / f"{fingerprint}-v{views}"
        self.views = views

    def missing(self, records: list[PairRecord]) -> list[PairRecord]:
        return [r for r in records if not self._path(r).exists()]

    def features(
        self,
        records: list[PairRecord],
        encoders: nn.ModuleDict,
        settings: TrainSettings,
        chunk: int = 32,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """(N, 1 + 2 * views, 2, C) float32 features for `records`, encoding only those not cached
        yet, `chunk` cases at a time (`on_chunk(done, total)` after each)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        missing = self.missing(records)
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            encoded = encode_views(encoders, part, settings, self.views)
            for record, features in zip(part, encoded, strict=True):
                self._write(record, features.numpy().astype(np.float16))
            if on_chunk is not None:
                on_chunk(start + len(part), len(missing))
        return torch.from_numpy(np.stack([np.load(self._path(r)) for r in records]).astype(np.float32))

    def _path(self, record: PairRecord) -> Path:
        return self.folder / f"{record.content}.npy"

    def _write(self, record: PairRecord, array: np.ndarray) -> None:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: np.save on a path would append ".npy"
                np.save(handle, array)

        atomic_write(self._path(record), save)


def feature_reader(
    encoder_state: dict[str, torch.Tensor], settings: TrainSettings, cache_root: Path | None
) -> Callable[[list[PairRecord]], torch.Tensor]:
    """A function from records to their (N, 1 + 2 * views, 2, C) features, through the feature cache
    when `cache_root` is given; the encoders are built and fingerprinted once, however often it is called."""
    encoders = build_encoders(encoder_state, settings)
    if cache_root is None:
        return lambda records: encode_views(encoders, records, settings)
    cache = FeatureCache(cache_root, encoder_fingerprint(encoder_state, settings), settings.finetune.views)
    return lambda records: cache.features(records, encoders, settings)


def record_features(
    encoder_state: dict[str, torch.Tensor], settings: TrainSettings, records: list[PairRecord], cache_root: Path | None
) -> torch.Tensor:
    """Frozen-encoder features of `records`, through the feature cache when `cache_root` is given."""
    return feature_reader(encoder_state, settings, cache_root)(records)

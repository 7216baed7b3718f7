"""Frozen-encoder tokens, computed once per (encoder weights, image content) and cached.

Fine-tuning on a new round of labels then reads tokens from disk instead of running the
encoders, which is what makes a retrain take seconds on a CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mics_core.config import TrainSettings, pretraining_key
from mics_core.data import PairRecord, load_pairs
from mics_core.devices import autocast, resolve_device
from mics_core.model.backbones import create_encoder
from mics_core.model.pretraining import MODALITIES
from mics_core.store import atomic_write


def encoder_fingerprint(state: dict[str, torch.Tensor], settings: TrainSettings) -> str:
    """A hash of the pre-training's identity (backbone, input size...) and the encoder weights: the
    cache's namespace."""
    digest = hashlib.sha256(pretraining_key(settings).encode())
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


@torch.no_grad()
def encode_pairs(encoders: nn.ModuleDict, images: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    """(N, 2, T, C) float tokens of (N, 2, 3, H, W) uint8 pairs."""
    encoders = encoders.to(device)
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch].to(device)
        with autocast(device):
            tokens = [encoders[m](encoders[m].normalise(chunk[:, i])) for i, m in enumerate(MODALITIES)]
        out.append(torch.stack(tokens, 1).float().cpu())
    return torch.cat(out)


class FeatureCache:
    """Token arrays on disk at `root/<encoder fingerprint>/<content key>.npy` (float16)."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.folder = Path(root) / fingerprint

    def tokens(
        self, records: list[PairRecord], encoders: nn.ModuleDict, settings: TrainSettings, chunk: int = 256
    ) -> torch.Tensor:
        """(N, 2, T, C) float32 tokens for `records`, encoding only those not cached yet."""
        self.folder.mkdir(parents=True, exist_ok=True)
        missing = [r for r in records if not self._path(r).exists()]
        device = resolve_device(settings.device)
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            encoded = encode_pairs(encoders, load_pairs(part, settings.pretrain.image_size), device)
            for record, tokens in zip(part, encoded, strict=True):
                self._write(record, tokens.numpy().astype(np.float16))
        return torch.from_numpy(np.stack([np.load(self._path(r)) for r in records]).astype(np.float32))

    def _path(self, record: PairRecord) -> Path:
        return self.folder / f"{record.content}.npy"

    def _write(self, record: PairRecord, array: np.ndarray) -> None:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: np.save on a path would append ".npy"
                np.save(handle, array)

        atomic_write(self._path(record), save)


def token_reader(
    encoder_state: dict[str, torch.Tensor], settings: TrainSettings, cache_root: Path | None
) -> Callable[[list[PairRecord]], torch.Tensor]:
    """A function from records to their frozen-encoder tokens, through the feature cache when
    `cache_root` is given; the encoders are built and fingerprinted once, however often it is called."""
    encoders = build_encoders(encoder_state, settings)
    if cache_root is None:
        device = resolve_device(settings.device)
        return lambda records: encode_pairs(encoders, load_pairs(records, settings.pretrain.image_size), device)
    cache = FeatureCache(cache_root, encoder_fingerprint(encoder_state, settings))
    return lambda records: cache.tokens(records, encoders, settings)


def record_tokens(
    encoder_state: dict[str, torch.Tensor], settings: TrainSettings, records: list[PairRecord], cache_root: Path | None
) -> torch.Tensor:
    """Frozen-encoder tokens of `records`, through the feature cache when `cache_root` is given."""
    return token_reader(encoder_state, settings, cache_root)(records)

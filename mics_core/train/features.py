"""Frozen-encoder tokens, computed once per (encoder weights, image content) and cached.

Fine-tuning on a new round of labels then reads tokens from disk instead of running the
encoders, which is what makes a retrain take seconds on a CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mics_core.config import TrainSettings
from mics_core.data import PairRecord, load_pairs
from mics_core.model.backbones import create_encoder, normalise
from mics_core.store import atomic_write
from mics_core.train.devices import autocast, resolve_device


def encoder_fingerprint(state: dict[str, torch.Tensor], settings: TrainSettings) -> str:
    """A hash of the encoder weights and the input size: the cache's namespace."""
    digest = hashlib.sha256(f"{settings.backbone}|{settings.image_size}".encode())
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def build_encoders(state: dict[str, torch.Tensor] | None, settings: TrainSettings) -> nn.ModuleDict:
    """The WLI and NBI encoders with `state` loaded (random init when None), in eval mode."""
    encoders = nn.ModuleDict({m: create_encoder(settings.backbone, settings.image_size) for m in ("wli", "nbi")})
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
            tokens = [encoders[m](normalise(chunk[:, i])) for i, m in enumerate(("wli", "nbi"))]
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
            encoded = encode_pairs(encoders, load_pairs(part, settings.image_size), device)
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

"""Device choice, seeding and mixed precision in one place."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """`cuda` falls back to the CPU with no GPU present, so a CPU-only host still trains."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA; full precision on the CPU (deterministic with a seed)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

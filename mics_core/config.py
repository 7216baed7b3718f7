"""Every setting in one place, read from `MICS_*` environment variables.

Deployments change behaviour through the environment (or a CLI flag that overrides it);
code never reads `os.environ` anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///data/mics.db"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Runtime settings; build with `Settings.from_env()`."""

    db_url: str = DEFAULT_DB_URL
    data_root: Path = field(default_factory=lambda: Path("data"))
    # Images above this many pixels are refused (decompression-bomb guard).
    # 40 MP is ~10x the largest endoscopy frames we know of.
    max_image_pixels: int = 40_000_000
    # Zip uploads: refuse archives that would unpack to more than this.
    max_unzipped_bytes: int = 20 * 1024**3
    max_zip_entries: int = 200_000
    thumbnail_size: int = 256
    # Retrain pre-trains again when the number of cases grew by more than this share.
    pretrain_growth: float = 0.5
    # A running job whose worker has not heart-beaten for this long is re-queued once, then failed.
    lease_seconds: float = 90.0
    # Synthetic demo pairs generated on first run (`make run`, the Overview screen's button).
    demo_pairs: int = 600
    # "password" (accounts, the default) or "none" (single user; only on a localhost-only server).
    auth_mode: str = "password"

    @property
    def store_root(self) -> Path:
        """Content-addressed images and thumbnails."""
        return self.data_root / "store"

    @property
    def models_root(self) -> Path:
        """Checkpoints: one file per model version or pre-training."""
        return self.data_root / "models"

    @property
    def feature_cache_root(self) -> Path:
        """Frozen-encoder tokens, one folder per encoder fingerprint."""
        return self.data_root / "cache" / "features"

    @property
    def demo_root(self) -> Path:
        return self.data_root / "demo"

    @classmethod
    def from_env(cls, db_url: str | None = None) -> Settings:
        """Settings from the environment; an explicit `db_url` (a CLI flag) wins."""
        return cls(
            db_url=db_url or os.environ.get("MICS_DB_URL") or DEFAULT_DB_URL,
            data_root=Path(os.environ.get("MICS_DATA_ROOT") or "data"),
            max_image_pixels=_env_int("MICS_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_unzipped_bytes=_env_int("MICS_MAX_UNZIPPED_BYTES", cls.max_unzipped_bytes),
            max_zip_entries=_env_int("MICS_MAX_ZIP_ENTRIES", cls.max_zip_entries),
            pretrain_growth=float(os.environ.get("MICS_PRETRAIN_GROWTH") or cls.pretrain_growth),
            lease_seconds=float(os.environ.get("MICS_LEASE_SECONDS") or cls.lease_seconds),
            demo_pairs=_env_int("MICS_DEMO_PAIRS", cls.demo_pairs),
            auth_mode=os.environ.get("MICS_AUTH") or cls.auth_mode,
        )


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a MICS model; stored in every checkpoint's JSON.

    The CPU preset is sized by measurement on 2 cores (see README, "Learning core");
    the GPU preset follows the paper (ViT encoders, 224 px, 6 fusion blocks).
    """

    # CPU preset by measurement (README, "Presets"): resnet10t's pre-training pays on real images
    # (HyperKvasir, 10 % labels: MICS 0.50 on random encoders, 0.59-0.64 after 40 epochs at 64 px), where
    # mobilenetv3_small_100, faster per step, never learnt the cross-modal losses and lost 9-26 points.
    backbone: str = "resnet10t"
    image_size: int = 64
    weights: str | None = None  # a local timm-compatible weights file; nothing is downloaded
    device: str = "cpu"
    # processes for stage-1 pre-training (one per GPU, launched with torchrun; >1 on the CPU runs gloo)
    gpus: int = 1
    seed: int = 0
    # stage 1: synergistic pre-training. The GPU preset uses ALBEF's momentum 0.995 and a long
    # queue; a CPU run has a few hundred steps, too few for a slow momentum encoder to move, so
    # the CPU default is faster. 40 epochs of 600 pairs take about 11 minutes on 2 cores.
    pretrain_epochs: int = 40
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    # brightness/contrast/saturation jitter of each view (factor 1 ± this)
    colour_jitter: float = 0.4
    mask_ratio: float = 0.75
    mask_patch: int = 16
    temperature: float = 0.07
    proj_dim: int = 256
    queue_size: int = 256
    momentum: float = 0.99
    w_consistency: float = 1.0
    w_reconstruction: float = 10.0
    w_adversarial: float = 0.1
    w_aligned: float = 1.0
    # stage 2: fusion fine-tuning on cached features
    fusion_dim: int = 128
    fusion_blocks: int = 2
    fusion_heads: int = 4
    finetune_epochs: int = 10  # longer over-fits a few dozen labels: 0.32 at 40, 0.35 at 10 (demo, 10 %)
    finetune_batch: int = 32
    finetune_lr: float = 2e-3
    finetune_weight_decay: float = 0.01
    shift: bool = True
    shift_atoms: int = 32
    semi_supervised: bool = True
    pseudo_threshold: float = 0.8
    w_unlabelled: float = 0.5
    modality_dropout: float = 0.15
    kl_weight: float = 0.1
    calibration_fraction: float = 0.2
    # after the temperature is fitted on the held-out labels, train the version's model on every label
    refit: bool = True
    # the benchmark's end-to-end baselines: optimiser steps (or the bench's time budget, first reached)
    baseline_steps: int = 200

    @classmethod
    def preset(cls, name: str, **overrides: object) -> TrainSettings:
        """`cpu` (the default) or `gpu`, with any field overridden."""
        presets: dict[str, dict[str, object]] = {
            "cpu": {},
            "gpu": {
                "backbone": "vit_small_patch16_224",
                "image_size": 224,
                "device": "cuda",
                "pretrain_epochs": 100,
                "pretrain_batch": 64,
                "fusion_blocks": 6,
                "fusion_dim": 384,
                "fusion_heads": 6,
                "queue_size": 8192,
                "momentum": 0.995,
                "pretrain_lr": 3e-4,
                "finetune_epochs": 60,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; use one of {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def from_env(cls, **overrides: object) -> TrainSettings:
        """The preset named by MICS_PRESET with MICS_BACKBONE, MICS_IMAGE_SIZE, MICS_PRETRAIN_EPOCHS,
        MICS_FINETUNE_EPOCHS, MICS_DEVICE, MICS_WEIGHTS and MICS_GPUS applied, then `overrides`."""
        env: dict[str, object] = {}
        for field_name, cast in (
            ("backbone", str),
            ("image_size", int),
            ("pretrain_epochs", int),
            ("finetune_epochs", int),
            ("device", str),
            ("weights", str),
            ("gpus", int),
        ):
            raw = os.environ.get(f"MICS_{field_name.upper()}")
            if raw:
                env[field_name] = cast(raw)
        return cls.preset(os.environ.get("MICS_PRESET", "cpu"), **{**env, **overrides})

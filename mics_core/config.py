"""Every setting in one place, read from `MICS_*` environment variables.

Deployments change behaviour through the environment (or a CLI flag that overrides it);
code never reads `os.environ` anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
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
    # Zip uploads: refuse archives that would unpack to more than this (4 GiB: about 20,000
    # endoscopy frames; larger sets import as folders), or with an entry compressed more than
    # `max_zip_ratio`-fold (images deflate 1-30-fold, bombs about 1000-fold).
    max_unzipped_bytes: int = 4 * 1024**3
    max_zip_entries: int = 200_000
    max_zip_ratio: float = 200.0
    thumbnail_size: int = 256
    # Retrain pre-trains again when the number of cases grew by more than this share.
    pretrain_growth: float = 0.5
    # A running job whose worker has not heart-beaten for this long is re-queued once, then failed.
    lease_seconds: float = 90.0
    # Synthetic demo pairs generated on first run (`make run`, the Overview screen's button).
    demo_pairs: int = 600
    # "password" (accounts, the default) or "none" (single user; only on a localhost-only server).
    auth_mode: str = "password"
    # The app starts a local worker for background work queued without one (the prepare job after
    # an import); off (MICS_BACKGROUND_WORKER=0) where workers are run by hand or on other hosts.
    background_worker: bool = True

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
            max_zip_ratio=float(os.environ.get("MICS_MAX_ZIP_RATIO") or cls.max_zip_ratio),
            pretrain_growth=float(os.environ.get("MICS_PRETRAIN_GROWTH") or cls.pretrain_growth),
            lease_seconds=float(os.environ.get("MICS_LEASE_SECONDS") or cls.lease_seconds),
            demo_pairs=_env_int("MICS_DEMO_PAIRS", cls.demo_pairs),
            auth_mode=os.environ.get("MICS_AUTH") or cls.auth_mode,
            background_worker=os.environ.get("MICS_BACKGROUND_WORKER", "1") != "0",
        )


@dataclass(frozen=True)
class PretrainSettings:
    """Stage 1, synergistic pre-training: everything that shapes the encoders, and so the
    pre-training's identity (`pretraining_key`)."""

    # The defaults are the small random-init path (tests, ablations); the presets (`TrainSettings.preset`)
    # are what the product runs: ImageNet EfficientNet-Lite0 on the CPU.
    backbone: str = "resnet10t"
    image_size: int = 64
    # None: random init; "imagenet": the ImageNet weights a pinned package ships (model.weights);
    # or a local timm-compatible weights file. Nothing is downloaded.
    weights: str | None = None
    # 40 epochs of 600 pairs take about 11 minutes on 2 cores.
    epochs: int = 40
    batch: int = 32
    lr: float = 1e-3
    # brightness/contrast/saturation jitter of each view (factor 1 ± this)
    colour_jitter: float = 0.4
    mask_ratio: float = 0.75
    mask_patch: int = 16
    temperature: float = 0.07
    proj_dim: int = 256
    # The GPU preset uses ALBEF's momentum 0.995 and a long queue; a CPU run has a few hundred
    # steps, too few for a slow momentum encoder to move, so the CPU default is faster.
    queue_size: int = 256
    momentum: float = 0.99
    w_consistency: float = 1.0
    w_reconstruction: float = 10.0
    w_adversarial: float = 0.1
    w_aligned: float = 1.0


@dataclass(frozen=True)
class FinetuneSettings:
    """Stage 2, fusion fine-tuning on cached pooled features of the frozen encoders; changing it
    never re-pre-trains. README, "Learning core", gives the measurements behind each default."""

    # Candidate fusion heads by hidden width (0: a linear fusion of the two views' pooled
    # features); the one with the best out-of-fold log-loss on the labels is trained.
    heads: tuple[int, ...] = (0, 256)
    folds: int = 5
    # Weak (crop, flips) and strong (the same plus RandAugment) views of each image, encoded once
    # through the frozen encoders and cached: the unlabelled pairs' consistency targets.
    views: int = 2
    steps: int = 400
    batch: int = 32
    unlabelled_batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    semi_supervised: bool = True
    # on calibrated probabilities (the out-of-fold temperature)
    pseudo_threshold: float = 0.8
    w_unlabelled: float = 1.0
    # the WLI and NBI heads' share of the loss (they give the per-view predictions and their conflict)
    w_views: float = 0.5
    modality_dropout: float = 0.15
    shift: bool = False
    shift_atoms: int = 32


@dataclass(frozen=True)
class BaselineSettings:
    """The benchmark's end-to-end image baselines (supervised, FixMatch)."""

    steps: int = 200  # optimiser steps (or the bench's time budget, first reached)
    lr: float = 3e-3
    batch: int = 32


STAGES = ("pretrain", "finetune", "baseline")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a MICS model, one nested part per stage; stored whole in every
    checkpoint and model version (`to_dict`), read back with `from_dict`.

    Flat names address a field from outside (environment, CLI flags, job parameters, and the
    flat dicts of versions saved before the split): a top-level field, `<stage>_<field>`
    (`pretrain_epochs`, `baseline_steps`) or a field name only one stage has (`backbone`).
    """

    device: str = "cpu"
    # processes for stage-1 pre-training (one per GPU, launched with torchrun; >1 on the CPU runs gloo)
    gpus: int = 1
    seed: int = 0
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)

    def replace(self, **changes: object) -> TrainSettings:
        """A copy with fields changed by flat name; an unknown name raises ValueError."""
        top: dict[str, object] = {}
        parts: dict[str, dict[str, object]] = {}
        for name, value in changes.items():
            stage, key = _locate(name)
            if stage is None:
                top[key] = value
            else:
                parts.setdefault(stage, {})[key] = value
        nested = {stage: replace(getattr(self, stage), **fields) for stage, fields in parts.items()}
        return replace(self, **top, **nested)

    @staticmethod
    def is_setting(name: str) -> bool:
        """Whether `name` is a flat name of some field."""
        try:
            _locate(name)
        except ValueError:
            return False
        return True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrainSettings:
        """Nested (as `to_dict` writes) or flat (versions saved before the split); unknown names are dropped."""
        nested = {stage: data[stage] for stage in STAGES if isinstance(data.get(stage), dict)}
        flat = {k: v for k, v in data.items() if k not in nested and cls.is_setting(k)}
        known = {
            stage: {k: v for k, v in values.items() if k in _PARTS[stage].__dataclass_fields__}
            for stage, values in nested.items()
        }
        if "heads" in known.get("finetune", {}):
            known["finetune"]["heads"] = tuple(known["finetune"]["heads"])
        settings = cls(**{stage: _PARTS[stage](**values) for stage, values in known.items()})
        return settings.replace(**flat)

    @classmethod
    def preset(cls, name: str, **overrides: object) -> TrainSettings:
        """`cpu` (the default) or `gpu`, with any field overridden by flat name."""
        presets: dict[str, dict[str, object]] = {
            # README, "Presets": ImageNet features beat 40 epochs of stage 1 from random init by 20 points
            "cpu": {
                "backbone": "tf_efficientnet_lite0",
                "image_size": 224,
                "weights": "imagenet",
                "pretrain_epochs": 0,
            },
            "gpu": {
                "backbone": "vit_small_patch16_224",
                "image_size": 224,
                "device": "cuda",
                "pretrain_epochs": 100,
                "pretrain_batch": 64,
                "heads": (0, 256, 1024),
                "queue_size": 8192,
                "momentum": 0.995,
                "pretrain_lr": 3e-4,
                "baseline_lr": 9e-4,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; use one of {', '.join(presets)}")
        return cls().replace(**{**presets[name], **overrides})

    @classmethod
    def from_env(cls, **overrides: object) -> TrainSettings:
        """The preset named by MICS_PRESET with MICS_BACKBONE, MICS_IMAGE_SIZE, MICS_PRETRAIN_EPOCHS,
        MICS_FINETUNE_STEPS, MICS_DEVICE, MICS_WEIGHTS ("none": random init) and MICS_GPUS applied,
        then `overrides`."""
        env: dict[str, object] = {}
        for name, cast in (
            ("backbone", str),
            ("image_size", int),
            ("pretrain_epochs", int),
            ("finetune_steps", int),
            ("device", str),
            ("weights", str),
            ("gpus", int),
        ):
            raw = os.environ.get(f"MICS_{name.upper()}")
            if raw:
                env[name] = None if name == "weights" and raw.lower() == "none" else cast(raw)
        return cls.preset(os.environ.get("MICS_PRESET", "cpu"), **{**env, **overrides})


_PARTS: dict[str, type] = {"pretrain": PretrainSettings, "finetune": FinetuneSettings, "baseline": BaselineSettings}


def _locate(name: str) -> tuple[str | None, str]:
    """(stage or None for a top-level field, field name) of a flat name."""
    if name in TrainSettings.__dataclass_fields__ and name not in STAGES:
        return None, name
    for stage, part in _PARTS.items():
        if name.startswith(stage + "_") and name[len(stage) + 1 :] in part.__dataclass_fields__:
            return stage, name[len(stage) + 1 :]
    owners = [stage for stage, part in _PARTS.items() if name in part.__dataclass_fields__]
    if len(owners) == 1:
        return owners[0], name
    raise ValueError(f"unknown training setting {name!r}")


def pretraining_key(settings: TrainSettings, data: str = "") -> str:
    """The identity of a pre-training: its stage's settings and the seed (and, where given, a hash
    of the images it saw). The retrain chain, the benchmark's cache and the feature cache all ask
    this one function whether two pre-trainings are the same."""
    identity = {"pretrain": asdict(settings.pretrain), "seed": settings.seed, "data": data}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]

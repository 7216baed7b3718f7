"""The learning core's doors: `pretrain_encoders` (stage 1), `train_mics` (stage 2, after stage 1
unless given encoders); predictions come from `mics_core.predict`, and a model version is a
`MICSModel` (`mics_core.model.checkpoint`) that saves to and loads from one file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mics_core.config import TrainSettings
from mics_core.data import PairRecord, load_pairs
from mics_core.features import build_encoders, record_features
from mics_core.model.checkpoint import MICSModel
from mics_core.progress import SILENT, Cancelled, Reporter
from mics_core.train.finetune import FineTuned, finetune
from mics_core.train.pretrain import Pretrained, pretrain

__all__ = [
    "Cancelled",
    "FineTuned",
    "MICSModel",
    "Pretrained",
    "Reporter",
    "initial_encoders",
    "pretrain_encoders",
    "train_mics",
]


def pretrain_encoders(records: list[PairRecord], settings: TrainSettings, reporter: Reporter = SILENT) -> Pretrained:
    """Stage 1 on every record's pair (labels are ignored); with `settings.gpus` > 1, under torchrun."""
    if settings.gpus > 1:
        from mics_core.train.distributed import pretrain_distributed

        return pretrain_distributed(records, settings, settings.gpus, reporter)
    return pretrain(load_pairs(records, settings.pretrain.image_size), settings, reporter)


def initial_encoders(settings: TrainSettings) -> dict[str, torch.Tensor]:
    """The encoders before stage 1 (random, seeded, or ImageNet with `weights`): what stage 2
    stands on when stage 1 is switched off."""
    torch.manual_seed(settings.seed)
    return {k: v.contiguous() for k, v in build_encoders(None, settings).state_dict().items()}


def train_mics(
    records: list[PairRecord],
    class_names: list[str],
    settings: TrainSettings,
    *,
    encoder_state: dict[str, torch.Tensor] | None = None,
    pretrain_first: bool = True,
    cache_root: Path | None = None,
    reporter: Reporter = SILENT,
) -> MICSModel:
    """Stage 1 (unless `encoder_state` is given, or `pretrain_first` or the stage's epochs are off:
    the initial encoders) then stage 2 on the records' labels (`label` -1 = unlabelled)."""
    if encoder_state is None:
        if pretrain_first and settings.pretrain.epochs > 0:
            encoder_state = pretrain_encoders(records, settings, reporter).state
        else:
            encoder_state = initial_encoders(settings)
    features = record_features(encoder_state, settings, records, cache_root)
    tuned = finetune(features, np.array([r.label for r in records]), class_names, settings, reporter)
    info = {"finetune_seconds": tuned.seconds, "n_labelled": int(sum(r.label >= 0 for r in records))}
    return MICSModel(encoder_state, tuned.model, tuned.temperature, class_names, settings, tuned.metrics, info)

"""The learning core's doors: `train_mics`, `MICSModel.predict`, `MICSModel.save` / `load`.

A `MICSModel` is everything one model version needs to predict: the two encoders, the
fusion classifier (with its shift dictionary), the temperature, the class list, the
settings and the held-out metrics. It saves to one safetensors file whose metadata holds
that JSON, so a version is one file and loading it reproduces its predictions exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mics_core.config import TrainSettings
from mics_core.data import PairRecord, load_pairs
from mics_core.model.fusion import FusionClassifier
from mics_core.store import atomic_write
from mics_core.train.devices import resolve_device
from mics_core.train.features import FeatureCache, build_encoders, encode_pairs, encoder_fingerprint
from mics_core.train.finetune import FineTuned, finetune, predict_tokens
from mics_core.train.pretrain import Pretrained, pretrain
from mics_core.train.progress import SILENT, Cancelled, Reporter

__all__ = [
    "Cancelled",
    "FineTuned",
    "MICSModel",
    "Pretrained",
    "Reporter",
    "pretrain_encoders",
    "random_encoders",
    "train_mics",
]


@dataclass
class MICSModel:
    encoder_state: dict[str, torch.Tensor]
    classifier: FusionClassifier
    temperature: float
    class_names: list[str]
    settings: TrainSettings
    metrics: dict[str, object] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    def predict(self, records: list[PairRecord], cache_root: Path | None = None) -> dict[str, np.ndarray]:
        """Calibrated probabilities, fused / per-view uncertainty, conflict and z_f for each record."""
        tokens = record_tokens(self.encoder_state, self.settings, records, cache_root)
        return predict_tokens(self.classifier, tokens, self.temperature)

    def save(self, path: Path) -> None:
        """Write atomically: a crash never leaves a half-written checkpoint under `path`."""
        tensors = {f"encoders.{k}": v.contiguous() for k, v in self.encoder_state.items()}
        tensors |= {f"classifier.{k}": v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}
        meta = {
            "settings": asdict(self.settings),
            "class_names": self.class_names,
            "temperature": self.temperature,
            "metrics": self.metrics,
            "info": self.info,
            "token_dim": self.classifier.dictionary.atoms.shape[1],
        }
        metadata = {"mics": json.dumps(meta, default=_json_default)}
        atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> MICSModel:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads(handle.metadata()["mics"])
        tensors = load_file(str(path))
        settings = TrainSettings(**meta["settings"])
        classifier = FusionClassifier(
            meta["token_dim"],
            len(meta["class_names"]),
            settings.fusion_dim,
            settings.fusion_blocks,
            settings.fusion_heads,
            settings.shift_atoms,
        )
        state = {k[len("classifier.") :]: v for k, v in tensors.items() if k.startswith("classifier.")}
        for name in ("token_mean", "token_std"):  # versions saved before standardisation: the identity
            state.setdefault(name, getattr(classifier, name))
        classifier.load_state_dict(state)
        encoders = {k[len("encoders.") :]: v for k, v in tensors.items() if k.startswith("encoders.")}
        return cls(
            encoders,
            classifier.eval(),
            meta["temperature"],
            meta["class_names"],
            settings,
            meta["metrics"],
            meta["info"],
        )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def record_tokens(
    encoder_state: dict[str, torch.Tensor], settings: TrainSettings, records: list[PairRecord], cache_root: Path | None
) -> torch.Tensor:
    """Frozen-encoder tokens of `records`, through the feature cache when `cache_root` is given."""
    encoders = build_encoders(encoder_state, settings)
    if cache_root is None:
        return encode_pairs(encoders, load_pairs(records, settings.image_size), resolve_device(settings.device))
    return FeatureCache(cache_root, encoder_fingerprint(encoder_state, settings)).tokens(records, encoders, settings)


def pretrain_encoders(records: list[PairRecord], settings: TrainSettings, reporter: Reporter = SILENT) -> Pretrained:
    """Stage 1 on every record's pair (labels are ignored); with `settings.gpus` > 1, under torchrun."""
    if settings.gpus > 1:
        from mics_core.train.distributed import pretrain_distributed

        return pretrain_distributed(records, settings, settings.gpus, reporter)
    return pretrain(load_pairs(records, settings.image_size), settings, reporter)


def random_encoders(settings: TrainSettings) -> dict[str, torch.Tensor]:
    """Untrained encoders, seeded: what stage 2 stands on when stage 1 is switched off."""
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
    """Stage 1 (unless `encoder_state` is given or `pretrain_first` is off: random encoders)
    then stage 2 on the records' labels (`label` -1 = unlabelled)."""
    if encoder_state is None:
        if pretrain_first:
            encoder_state = pretrain_encoders(records, settings, reporter).state
        else:
            encoder_state = random_encoders(settings)
    tokens = record_tokens(encoder_state, settings, records, cache_root)
    tuned = finetune(tokens, np.array([r.label for r in records]), class_names, settings, reporter)
    info = {"finetune_seconds": tuned.seconds, "n_labelled": int(sum(r.label >= 0 for r in records))}
    return MICSModel(encoder_state, tuned.model, tuned.temperature, class_names, settings, tuned.metrics, info)

"""A model version as one file: everything it needs to predict.

A `MICSModel` holds the two encoders, the fusion classifier (with its shift dictionary),
the temperature, the class list, the settings and the held-out metrics. It saves to one
safetensors file whose metadata holds that JSON, so loading it reproduces its predictions
exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mics_core.config import TrainSettings
from mics_core.model.fusion import FusionClassifier
from mics_core.store import atomic_write


@dataclass
class MICSModel:
    encoder_state: dict[str, torch.Tensor]
    classifier: FusionClassifier
    temperature: float
    class_names: list[str]
    settings: TrainSettings
    metrics: dict[str, object] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write atomically: a crash never leaves a half-written checkpoint under `path`."""
        tensors = {f"encoders.{k}": v.contiguous() for k, v in self.encoder_state.items()}
        tensors |= {f"classifier.{k}": v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}
        meta = {
            "settings": self.settings.to_dict(),
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
        settings = TrainSettings.from_dict(meta["settings"])
        classifier = FusionClassifier.from_settings(meta["token_dim"], len(meta["class_names"]), settings.finetune)
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

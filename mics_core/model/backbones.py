"""The one factory for encoders: any timm backbone as a token encoder.

Nothing is downloaded: models are built with `pretrained=False`, or from a local weights
file through timm's `pretrained_cfg_overlay=dict(file=...)`, which also drops the
classifier weights a checkpoint may carry. Each encoder normalises its own input with the
mean and std timm records for that model (ImageNet's for the ResNets, 0.5 for ViTs).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from mics_core.model.weights import imagenet_state

IMAGENET = "imagenet"  # `weights` naming the ImageNet weights that ship in a pinned package (model.weights)

# The backbones the Train screen offers, and why (README, "Presets, chosen by measurement").
# Any other timm name works too: its token layout is read off the built model, its input
# normalisation from timm's pretrained_cfg for that model.
SUPPORTED: dict[str, str] = {
    "resnet10t": "CPU preset: learns the cross-modal task on 2 cores, 20 s an epoch of 600 pairs at 64 px",
    "resnet18": "learns the cross-modal task; about as fast as resnet10t at 64 px, 5x slower at 128 px",
    "efficientnet_b0": "fast, but stayed at chance in the cross-modal check on 2 cores",
    "vit_tiny_patch16_224": "a small ViT (MAE-style masking), for a GPU",
    "vit_small_patch16_224": "GPU preset: the paper's ViT-S/16 at 224 px",
    "tf_efficientnet_lite0": "ImageNet weights ship in a pinned package (weights: imagenet)",
}


class Encoder(nn.Module):
    """A timm backbone that returns tokens (B, N, C): ViT patch tokens or CNN feature-map cells.

    `is_vit` means the model has a patch embedding and position embedding timm's ViT way
    (whichever timm module registered it), so MAE can encode just the visible patches.
    """

    def __init__(self, name: str, image_size: int, weights: str | Path | None = None) -> None:
        super().__init__()
        probe = timm.create_model(name, pretrained=False, num_classes=0)
        self.is_vit = hasattr(probe, "patch_embed") and hasattr(probe, "_pos_embed")
        kwargs: dict[str, object] = {"num_classes": 0}
        if self.is_vit:
            kwargs["img_size"] = image_size
        if weights == IMAGENET:
            self.net = timm.create_model(name, pretrained=False, **kwargs)
            state = {k: v for k, v in imagenet_state(name).items() if not k.startswith("classifier.")}
            self.net.load_state_dict(state)
        elif weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"weights file {weights} not found; give a local .safetensors/.pth file")
            self.net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)
        elif self.is_vit:
            self.net = timm.create_model(name, pretrained=False, **kwargs)
        else:
            self.net = probe
        config = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.get("std", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.dim: int = self.net.num_features
        self.image_size = image_size
        self.patch = self.net.patch_embed.patch_size[0] if self.is_vit else image_size // self._grid(image_size)

    def _grid(self, image_size: int) -> int:
        with torch.no_grad():
            was_training = self.net.training
            self.net.eval()
            side = self.net.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[-1]
            self.net.train(was_training)
        return side

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-255 float) (B, 3, H, W) to the input this backbone was built for."""
        return (images.float() / 255 - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.forward_features(x)
        if features.ndim == 3:  # a token sequence: drop the class / register tokens
            return features[:, getattr(self.net, "num_prefix_tokens", 0) :]
        return features.flatten(2).transpose(1, 2)

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """ViT only (MAE): encode just the patch tokens at indices `keep` (B, K)."""
        net = self.net
        tokens = net._pos_embed(net.patch_embed(x))
        prefix, patches = tokens[:, : net.num_prefix_tokens], tokens[:, net.num_prefix_tokens :]
        patches = torch.gather(patches, 1, keep[..., None].expand(-1, -1, patches.shape[-1]))
        tokens = net.blocks(net.norm_pre(torch.cat([prefix, patches], 1)))
        return net.norm(tokens)[:, net.num_prefix_tokens :]


def create_encoder(name: str, image_size: int, weights: str | Path | None = None) -> Encoder:
    """Build an encoder; raises a helpful error for unknown backbone names."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for names"
        raise ValueError(f"unknown backbone {name!r}; {hint}")
    return Encoder(name, image_size, weights)

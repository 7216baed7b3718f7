"""The one factory for encoders: any timm backbone as a token encoder.

Nothing is downloaded: models are built with `pretrained=False`, or from a local weights
file through timm's `pretrained_cfg_overlay=dict(file=...)`, which also drops the
classifier weights a checkpoint may carry.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """A timm backbone that returns tokens (B, N, C): ViT patch tokens or CNN feature-map cells."""

    def __init__(self, name: str, image_size: int, weights: str | Path | None = None) -> None:
        super().__init__()
        self.is_vit = name in timm.list_models(module="vision_transformer")
        kwargs: dict[str, object] = {"num_classes": 0}
        if self.is_vit:
            kwargs["img_size"] = image_size
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"weights file {weights} not found; give a local .safetensors/.pth file")
            self.net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)
        else:
            self.net = timm.create_model(name, pretrained=False, **kwargs)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.forward_features(x)
        if self.is_vit:
            return features[:, self.net.num_prefix_tokens :]
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


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) to the float ImageNet-normalised input every encoder expects."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std

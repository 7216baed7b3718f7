"""Stage 1 of MICS: synergistic self-supervised pre-training of the WLI and NBI encoders.

Three losses on every batch of pairs (each modality is an augmented view of the other):
(a) consistency: ALBEF-style contrastive loss in a low-dimensional projection, with
    momentum encoders and a queue of negatives;
(b) reconstruction: mask 75 % of the patches of both images, encode, and rebuild them
    with one shared light decoder (MAE for ViTs: only visible tokens are encoded;
    SimMIM for CNNs: masked pixels are blanked), L1 on masked pixels, plus an
    adversarial term from a discriminator on the reconstructions. Unlike the authors'
    released code, the adversarial term is computed on non-detached reconstructions, so
    its gradient reaches the decoder and the encoders;
(c) alignment: InfoNCE between the modalities in the 512-d global embedding space
    (Linear→2048, BN+ReLU, Linear→512, BN).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mics_core.config import PretrainSettings
from mics_core.model.backbones import Encoder, create_encoder

MODALITIES = ("wli", "nbi")


class GlobalEmbedding(nn.Sequential):
    """The paper's global embedding head: Linear→2048, BN+ReLU, Linear→512, BN."""

    def __init__(self, dim: int) -> None:
        super().__init__(
            nn.Linear(dim, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True), nn.Linear(2048, 512), nn.BatchNorm1d(512)
        )


class PixelDecoder(nn.Module):
    """SimMIM's light decoder for CNN feature maps: a 1x1 conv and a pixel shuffle."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, 3 * stride * stride, 1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, tokens: torch.Tensor, grid: int) -> torch.Tensor:
        fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid, grid)
        return self.shuffle(self.conv(fmap))


class TokenDecoder(nn.Module):
    """MAE's light decoder: mask tokens in the gaps, one transformer block, patch pixels out."""

    def __init__(self, dim: int, patch: int, n_patches: int, width: int = 256) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, n_patches, width) * 0.02)
        self.block = nn.TransformerEncoderLayer(width, 4, width * 2, batch_first=True, norm_first=True)
        self.out = nn.Linear(width, 3 * patch * patch)
        self.patch = patch

    def forward(self, visible: torch.Tensor, keep: torch.Tensor, n_patches: int, grid: int) -> torch.Tensor:
        batch = visible.shape[0]
        tokens = self.mask_token.expand(batch, n_patches, -1).clone()
        tokens.scatter_(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), self.embed(visible))
        patches = self.out(self.block(tokens + self.pos))
        p = self.patch
        return patches.view(batch, grid, grid, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(batch, 3, grid * p, grid * p)


class Discriminator(nn.Module):
    """A small patch discriminator that tells reconstructions from real images."""

    def __init__(self) -> None:
        super().__init__()

        def down(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]

        self.net = nn.Sequential(*down(3, 32), *down(32, 64), *down(64, 64), nn.Conv2d(64, 1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def patch_mask(batch: int, grid: int, ratio: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(B, grid*grid) boolean, True where a patch is masked; exactly round(ratio*N) per image."""
    n = grid * grid
    n_masked = min(n - 1, max(1, round(ratio * n)))
    order = torch.rand(batch, n, generator=generator).argsort(1).to(device)
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE where row i of `keys` is the positive of row i of `query` and other rows are negatives."""
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


class SynergisticPretrainer(nn.Module):
    """Both encoders with every stage-1 head; `losses` returns each loss term by name."""

    def __init__(self, settings: PretrainSettings) -> None:
        super().__init__()
        self.settings = settings
        self.encoders = nn.ModuleDict(
            {m: create_encoder(settings.backbone, settings.image_size, settings.weights) for m in MODALITIES}
        )
        encoder: Encoder = self.encoders["wli"]
        dim = encoder.dim
        self.is_vit = encoder.is_vit
        self.mask_patch = encoder.patch if self.is_vit else settings.mask_patch
        self.grid = settings.image_size // encoder.patch
        self.projections = nn.ModuleDict({m: nn.Linear(dim, settings.proj_dim) for m in MODALITIES})
        self.embeddings = nn.ModuleDict({m: GlobalEmbedding(dim) for m in MODALITIES})
        if self.is_vit:
            self.decoder: nn.Module = TokenDecoder(dim, encoder.patch, self.grid**2)
        else:
            self.decoder = PixelDecoder(dim, encoder.patch)
        self.discriminator = Discriminator()
        self.momentum_encoders = copy.deepcopy(self.encoders).requires_grad_(False)
        self.momentum_projections = copy.deepcopy(self.projections).requires_grad_(False)
        for m in MODALITIES:
            self.register_buffer(f"queue_{m}", F.normalize(torch.randn(settings.queue_size, settings.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def generator_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def _masked_reconstruction(self, m: str, images: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, pixel mask) for one modality."""
        size, batch = images.shape[-1], images.shape[0]
        grid = size // self.mask_patch
        mask = patch_mask(batch, grid, self.settings.mask_ratio, generator, images.device)
        pixel_mask = mask.view(batch, 1, grid, grid).float()
        pixel_mask = F.interpolate(pixel_mask, scale_factor=self.mask_patch, mode="nearest")
        encoder = self.encoders[m]
        if self.is_vit:
            keep = (~mask).nonzero()[:, 1].view(batch, -1)
            recon = self.decoder(encoder.forward_visible(images, keep), keep, grid * grid, grid)
        else:
            recon = self.decoder(encoder(images * (1 - pixel_mask)), self.grid)
        return recon, pixel_mask

    def losses(
        self, wli: torch.Tensor, nbi: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Generator-side losses by name, and (reconstructions, originals) for the discriminator."""
        images = {"wli": wli, "nbi": nbi}
        pooled = {m: self.encoders[m](images[m]).mean(1) for m in MODALITIES}
        low = {m: F.normalize(self.projections[m](pooled[m]), dim=-1) for m in MODALITIES}
        with torch.no_grad():
            key = {
                m: F.normalize(self.momentum_projections[m](self.momentum_encoders[m](images[m]).mean(1)), dim=-1)
                for m in MODALITIES
            }
        t = self.settings.temperature
        consistency = 0.5 * (
            _queue_nce(low["wli"], key["nbi"], self.queue_nbi, t)
            + _queue_nce(low["nbi"], key["wli"], self.queue_wli, t)
        )
        recons, reals, rec_loss = [], [], 0.0
        for m in MODALITIES:
            recon, pixel_mask = self._masked_reconstruction(m, images[m], generator)
            per_pixel = (recon - images[m]).abs() * pixel_mask
            rec_loss = rec_loss + per_pixel.sum() / (pixel_mask.sum() * 3).clamp(min=1) / 2
            recons.append(recon)
            reals.append(images[m])
        recon_all, real_all = torch.cat(recons), torch.cat(reals)
        recon_logits = self.discriminator(recon_all)
        adversarial = F.binary_cross_entropy_with_logits(recon_logits, torch.ones_like(recon_logits))
        embedded = {m: self.embeddings[m](pooled[m]) for m in MODALITIES}
        aligned = 0.5 * (info_nce(embedded["wli"], embedded["nbi"], t) + info_nce(embedded["nbi"], embedded["wli"], t))
        self._last_keys = key
        return (
            {"consistency": consistency, "reconstruction": rec_loss, "adversarial": adversarial, "aligned": aligned},
            recon_all,
            real_all,
        )

    def forward(
        self,
        wli: torch.Tensor | None = None,
        nbi: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        discriminate: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """Both steps through one entry point, so DistributedDataParallel averages the gradients
        of each: the generator-side `losses(wli, nbi)`, or with `discriminate=(recon, real)`
        the discriminator's loss."""
        if discriminate is not None:
            return self.discriminator_loss(*discriminate)
        return self.losses(wli, nbi, generator)

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.settings
        return (
            s.w_consistency * losses["consistency"]
            + s.w_reconstruction * losses["reconstruction"]
            + s.w_adversarial * losses["adversarial"]
            + s.w_aligned * losses["aligned"]
        )

    def discriminator_loss(self, recon: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        recon_logits = self.discriminator(recon.detach())
        real_logits = self.discriminator(real)
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(recon_logits, torch.zeros_like(recon_logits))
        )

    @torch.no_grad()
    def after_step(self) -> None:
        """Momentum update of the key encoders, then enqueue this batch's keys."""
        m = self.settings.momentum
        for online, target in ((self.encoders, self.momentum_encoders), (self.projections, self.momentum_projections)):
            for p, q in zip(online.parameters(), target.parameters(), strict=True):
                q.mul_(m).add_(p.detach(), alpha=1 - m)
        size = self.settings.queue_size
        batch = self._last_keys["wli"].shape[0]
        ptr = int(self.queue_ptr)
        idx = torch.arange(ptr, ptr + batch, device=self.queue_ptr.device) % size
        for name in MODALITIES:
            getattr(self, f"queue_{name}")[idx] = self._last_keys[name]
        self.queue_ptr.fill_((ptr + batch) % size)


def _queue_nce(
    query: torch.Tensor, positive_keys: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ALBEF's image-to-image contrastive term: batch keys plus the queue as negatives."""
    keys = torch.cat([positive_keys, queue.clone().detach()])
    logits = query @ keys.T / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))

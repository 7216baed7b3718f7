"""Stage 2 of MICS: the multimodal fusion encoder, the shift-vector dictionary and the
evidential classifier, all on cached tokens of the frozen pre-trained encoders.

The shift-vector dictionary is our reading of the paper's figure (the text gives no
formula): k-means over the pre-training features of both modalities gives atoms D with
centre D̄. For a case, the modality shift of view m is the offset of its nearest atom,
δ_m = D[a(z_m)] - D̄; the class shift κ_y is the mean offset of the atoms of the labelled
cases of class y. In training the classifier sees z_f, z_f ⊕ s_w and z_f ⊕ s_n with
s_m = W(δ_m + γ (κ_y - δ_m)), γ ~ U(0, 1), ⊕ = addition: the fused feature is moved
along directions the data itself spans, towards its class, as feature-space
augmentation against over-fitting on few labels. At prediction time no shift is added.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from mics_core.config import FinetuneSettings
from mics_core.model.evidential import EvidentialHead, Opinion, combine, conflict


class CrossModalBlock(nn.Module):
    """Self-attention within a modality, cross-attention to the other, feed-forward (pre-norm)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(self.norm_cross(x), other, other, need_weights=False)[0]
        return x + self.ff(self.norm_ff(x))


class ShiftDictionary(nn.Module):
    """k-means atoms of pre-training features, and class shifts, as buffers of the model."""

    def __init__(self, feature_dim: int, atoms: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("atoms", torch.zeros(atoms, feature_dim))
        self.register_buffer("class_shift", torch.zeros(n_classes, feature_dim))

    def fit(self, features: np.ndarray, seed: int) -> None:
        """Build the atoms from pooled pre-training features of both modalities (rows)."""
        k = min(len(self.atoms), len(features))
        kmeans = KMeans(k, n_init=3, random_state=seed).fit(features)
        atoms = torch.zeros_like(self.atoms)
        atoms[:k] = torch.as_tensor(kmeans.cluster_centers_, dtype=atoms.dtype)
        atoms[k:] = atoms[:k].mean(0)
        self.atoms.copy_(atoms)

    def offset(self, pooled: torch.Tensor) -> torch.Tensor:
        """δ: the offset of each row's nearest atom from the dictionary's centre."""
        nearest = torch.cdist(pooled, self.atoms).argmin(1)
        return self.atoms[nearest] - self.atoms.mean(0)

    def fit_classes(self, pooled_wli: torch.Tensor, pooled_nbi: torch.Tensor, labels: torch.Tensor) -> None:
        """κ_y: mean atom offset of the labelled cases of class y (zero for a class with none)."""
        offsets = 0.5 * (self.offset(pooled_wli) + self.offset(pooled_nbi))
        shift = torch.zeros_like(self.class_shift)
        for y in labels.unique():
            shift[y] = offsets[labels == y].mean(0)
        self.class_shift.copy_(shift)


class FusionClassifier(nn.Module):
    """Fusion encoder f_M and evidential heads for WLI, NBI and the fused feature z_f."""

    def __init__(self, token_dim: int, n_classes: int, dim: int, blocks: int, heads: int, atoms: int) -> None:
        super().__init__()
        # per-channel token statistics of each modality, fitted on all cases (`fit_standardisation`)
        self.register_buffer("token_mean", torch.zeros(2, token_dim))
        self.register_buffer("token_std", torch.ones(2, token_dim))
        self.inputs = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, dim)) for m in ("wli", "nbi")}
        )
        self.modality = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, dim)) for m in ("wli", "nbi")})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, token_dim)) for m in ("wli", "nbi")})
        self.blocks_wli = nn.ModuleList(CrossModalBlock(dim, heads) for _ in range(blocks))
        self.blocks_nbi = nn.ModuleList(CrossModalBlock(dim, heads) for _ in range(blocks))
        self.fuse = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim))
        self.shift_projection = nn.Linear(token_dim, dim)
        self.dictionary = ShiftDictionary(token_dim, atoms, n_classes)
        self.head_wli, self.head_nbi = EvidentialHead(dim, n_classes), EvidentialHead(dim, n_classes)
        self.head_fused = EvidentialHead(dim, n_classes)

    @classmethod
    def from_settings(cls, token_dim: int, n_classes: int, part: FinetuneSettings) -> FusionClassifier:
        return cls(token_dim, n_classes, part.fusion_dim, part.fusion_blocks, part.fusion_heads, part.shift_atoms)

    def fit_standardisation(self, tokens: torch.Tensor) -> None:
        """Fit the per-channel mean and std of (N, 2, T, C) tokens. Frozen CNN channels differ in
        scale by orders of magnitude, and a few dozen labels cannot learn to rescale them
        (measured: 0.30 → 0.33 accuracy with 10 % demo labels)."""
        std, mean = torch.std_mean(tokens, (0, 2))
        self.token_mean.copy_(mean)
        self.token_std.copy_(std.clamp(min=1e-4))

    def encode(
        self, wli: torch.Tensor, nbi: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_wli, h_nbi, z_f) from token sets (B, N, C); `drop` (B, 2) bool replaces a view by
        a learned "missing" token set (modality dropout)."""
        wli = (wli - self.token_mean[0]) / self.token_std[0]
        nbi = (nbi - self.token_mean[1]) / self.token_std[1]
        if drop is not None:
            wli = torch.where(drop[:, :1, None], self.missing["wli"].expand_as(wli), wli)
            nbi = torch.where(drop[:, 1:, None], self.missing["nbi"].expand_as(nbi), nbi)
        x_w = self.inputs["wli"](wli) + self.modality["wli"]
        x_n = self.inputs["nbi"](nbi) + self.modality["nbi"]
        for block_w, block_n in zip(self.blocks_wli, self.blocks_nbi, strict=True):
            x_w, x_n = block_w(x_w, x_n), block_n(x_n, x_w)
        h_w, h_n = x_w.mean(1), x_n.mean(1)
        return h_w, h_n, self.fuse(torch.cat([h_w, h_n], -1))

    def shift_vectors(
        self, wli: torch.Tensor, nbi: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_w, s_n) for training: modality shifts pulled a random way towards the class shift."""
        kappa = self.dictionary.class_shift[labels]
        gamma = torch.rand(len(labels), 1, generator=generator).to(kappa.device)
        shifts = []
        for tokens in (wli, nbi):
            delta = self.dictionary.offset(tokens.mean(1))
            shifts.append(self.shift_projection(delta + gamma * (kappa - delta)))
        return shifts[0], shifts[1]

    def opinions(self, h_w: torch.Tensor, h_n: torch.Tensor, z_f: torch.Tensor) -> dict[str, Opinion]:
        wli = Opinion.from_evidence(self.head_wli(h_w))
        nbi = Opinion.from_evidence(self.head_nbi(h_n))
        fused_head = Opinion.from_evidence(self.head_fused(z_f))
        return {"wli": wli, "nbi": nbi, "fusion": fused_head, "combined": combine(combine(wli, nbi), fused_head)}

    @torch.no_grad()
    def predict(self, wli: torch.Tensor, nbi: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities (before calibration), uncertainties, modality conflict and z_f."""
        h_w, h_n, z_f = self.encode(wli, nbi)
        op = self.opinions(h_w, h_n, z_f)
        return {
            "probs": op["combined"].probabilities,
            "uncertainty": op["combined"].uncertainty,
            "uncertainty_wli": op["wli"].uncertainty,
            "uncertainty_nbi": op["nbi"].uncertainty,
            "conflict": conflict(op["wli"], op["nbi"]),
            "pred_wli": op["wli"].probabilities.argmax(1),
            "pred_nbi": op["nbi"].probabilities.argmax(1),
            "embedding": z_f,
        }

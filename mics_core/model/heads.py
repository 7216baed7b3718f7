"""Stage 2 of MICS: the fusion head on the two views' pooled frozen features, and the
shift-vector dictionary.

A `FusionHead` has three classifiers: one on WLI, one on NBI, and the fused one on both
(linear, or one hidden layer). Its size is chosen per training by cross-validation
(`mics_core.train.finetune`): with a few dozen labels a linear fusion is often best.

The shift-vector dictionary is our reading of the paper's figure (the text gives no
formula): k-means over the features of both modalities gives atoms D with centre D̄. For a
case, the modality shift of view m is the offset of its nearest atom, δ_m = D[a(x_m)] - D̄;
the class shift κ_y is the mean offset of the atoms of the labelled cases of class y. In
training a labelled view may be moved by γ (κ_y - δ_m), γ ~ U(0, 1): along directions the
data itself spans, towards its class. At prediction time no shift is added.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

EMBEDDING_DIM = 32


class ShiftDictionary(nn.Module):
    """k-means atoms of the features, and class shifts, as buffers of the model."""

    def __init__(self, feature_dim: int, atoms: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("atoms", torch.zeros(atoms, feature_dim))
        self.register_buffer("class_shift", torch.zeros(n_classes, feature_dim))

    def fit(self, features: np.ndarray, seed: int) -> None:
        """Build the atoms from features of both modalities (rows)."""
        k = min(len(self.atoms), len(features))
        kmeans = KMeans(k, n_init=3, random_state=seed).fit(features)
        atoms = torch.zeros_like(self.atoms)
        atoms[:k] = torch.as_tensor(kmeans.cluster_centers_, dtype=atoms.dtype)
        atoms[k:] = atoms[:k].mean(0)
        self.atoms.copy_(atoms)

    def offset(self, features: torch.Tensor) -> torch.Tensor:
        """δ: the offset of each row's nearest atom from the dictionary's centre."""
        nearest = torch.cdist(features, self.atoms).argmin(1)
        return self.atoms[nearest] - self.atoms.mean(0)

    def fit_classes(self, wli: torch.Tensor, nbi: torch.Tensor, labels: torch.Tensor) -> None:
        """κ_y: mean atom offset of the labelled cases of class y (zero for a class with none)."""
        offsets = 0.5 * (self.offset(wli) + self.offset(nbi))
        shift = torch.zeros_like(self.class_shift)
        for y in labels.unique():
            shift[y] = offsets[labels == y].mean(0)
        self.class_shift.copy_(shift)

    def shifted(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 2, C) standardised views, each moved a random way from its atom towards its class."""
        gamma = torch.rand(len(labels), 2, 1, generator=generator).to(x.device)
        delta = torch.stack([self.offset(x[:, 0]), self.offset(x[:, 1])], 1)
        return x + gamma * (self.class_shift[labels][:, None] - delta)


class FusionHead(nn.Module):
    """Classifiers for WLI, NBI and the fused pair, on (B, 2, C) pooled features."""

    def __init__(self, feature_dim: int, n_classes: int, hidden: int, atoms: int) -> None:
        super().__init__()
        self.hidden = hidden
        # per-channel statistics of each modality's L2-normalised features, fitted on all cases
        self.register_buffer("feature_mean", torch.zeros(2, feature_dim))
        self.register_buffer("feature_std", torch.ones(2, feature_dim))
        # principal axes of the fused features: the embedding behind the UMAP view
        self.register_buffer("embedding_axes", torch.zeros(2 * feature_dim, EMBEDDING_DIM))
        self.wli, self.nbi = nn.Linear(feature_dim, n_classes), nn.Linear(feature_dim, n_classes)
        if hidden:
            self.fused: nn.Module = nn.Sequential(
                nn.Dropout(0.5),
                nn.Linear(2 * feature_dim, hidden),
                nn.GELU(),
                nn.Dropout(0.2),
                nn.Linear(hidden, n_classes),
            )
        else:
            self.fused = nn.Linear(2 * feature_dim, n_classes)
        self.dictionary = ShiftDictionary(feature_dim, atoms, n_classes)

    @property
    def description(self) -> str:
        return f"one hidden layer of {self.hidden}" if self.hidden else "linear"

    def fit_statistics(self, pooled: torch.Tensor) -> None:
        """Fit the standardisation and the embedding axes on (N, 2, C) features of every case.
        Frozen CNN channels differ in scale by orders of magnitude, which a few dozen labels cannot
        learn to undo."""
        unit = F.normalize(pooled, dim=-1)
        std, mean = torch.std_mean(unit, 0)
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-4))
        fused = self.standardise(pooled).flatten(1)
        q = min(EMBEDDING_DIM, *fused.shape)
        _, _, axes = torch.pca_lowrank(fused, q=q, center=True)
        self.embedding_axes.zero_()
        self.embedding_axes[:, :q] = axes

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        return (F.normalize(pooled, dim=-1) - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fused, WLI, NBI) logits of standardised (B, 2, C) features."""
        return self.fused(x.flatten(1)), self.wli(x[:, 0]), self.nbi(x[:, 1])

    @torch.no_grad()
    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of the three classifiers (before calibration) and the embedding of (B, 2, C) features."""
        self.eval()
        x = self.standardise(pooled)
        fused, wli, nbi = self(x)
        return {"logits": fused, "logits_wli": wli, "logits_nbi": nbi, "embedding": x.flatten(1) @ self.embedding_axes}


class HeadEnsemble(nn.Module):
    """The k fold models of the chosen head (one model when no label could be held out), averaged
    (logits of the three classifiers): each was
    calibrated on labels it never saw, so the temperature fitted on their out-of-fold predictions
    holds for them, as in scikit-learn's `CalibratedClassifierCV(ensemble=True)`. One model trained
    on every label instead would be more confident than the folds it was calibrated on (measured:
    ECE 0.16-0.23 at 10 % HyperKvasir labels)."""

    def __init__(self, members: list[FusionHead]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def hidden(self) -> int:
        return self.members[0].hidden

    @property
    def feature_dim(self) -> int:
        return self.members[0].wli.in_features

    @property
    def description(self) -> str:
        n = len(self.members)
        return self.members[0].description + (f", {n} fold models" if n > 1 else "")

    @torch.no_grad()
    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = [member.predict(pooled) for member in self.members]
        mean = {k: torch.stack([o[k] for o in outs]).mean(0) for k in ("logits", "logits_wli", "logits_nbi")}
        return mean | {"embedding": outs[0]["embedding"]}

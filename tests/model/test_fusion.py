"""The shift-vector dictionary and the fusion classifier."""

from __future__ import annotations

import numpy as np
import torch

from mics_core.model.fusion import FusionClassifier, ShiftDictionary


def _blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    return np.concatenate([c + rng.normal(0, 0.1, (30, 2)) for c in centres]), centres


def test_dictionary_atoms_are_the_clusters_of_pretraining_features():
    features, centres = _blobs()
    dictionary = ShiftDictionary(feature_dim=2, atoms=3, n_classes=2)
    dictionary.fit(features, seed=0)
    found = sorted(map(tuple, dictionary.atoms.round().tolist()))
    assert found == sorted(map(tuple, centres.tolist()))


def test_offset_is_the_nearest_atom_minus_the_centre():
    features, _ = _blobs()
    dictionary = ShiftDictionary(2, 3, 2)
    dictionary.fit(features, seed=0)
    centre = dictionary.atoms.mean(0)
    offset = dictionary.offset(torch.tensor([[9.0, 1.0]]))
    assert torch.allclose(offset[0], torch.tensor([10.0, 0.0]) - centre, atol=0.1)


def test_class_shift_is_the_mean_offset_of_the_class():
    features, _ = _blobs()
    dictionary = ShiftDictionary(2, 3, n_classes=3)
    dictionary.fit(features, seed=0)
    wli = torch.tensor([[10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    nbi = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])
    dictionary.fit_classes(wli, nbi, torch.tensor([0, 0, 1]))
    centre = dictionary.atoms.mean(0)
    expected = 0.5 * ((torch.tensor([10.0, 0.0]) - centre) + (torch.tensor([0.0, 10.0]) - centre))
    assert torch.allclose(dictionary.class_shift[0], expected, atol=0.1)
    assert torch.allclose(dictionary.class_shift[1], torch.tensor([0.0, 10.0]) - centre, atol=0.1)
    assert torch.equal(dictionary.class_shift[2], torch.zeros(2))  # no labels, no shift


def test_fewer_features_than_atoms_still_builds_a_dictionary():
    dictionary = ShiftDictionary(2, atoms=8, n_classes=2)
    dictionary.fit(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), seed=0)
    assert torch.isfinite(dictionary.atoms).all()


def test_shift_vectors_lie_between_the_modality_and_the_class_shift():
    torch.manual_seed(0)
    model = FusionClassifier(token_dim=2, n_classes=2, dim=4, blocks=1, heads=1, atoms=3)
    features, _ = _blobs()
    model.dictionary.fit(features, seed=0)
    tokens = torch.tensor([[[10.0, 0.0]]])  # (B=1, N=1, C=2)
    labels = torch.tensor([0])
    model.dictionary.class_shift[0] = model.dictionary.offset(torch.tensor([[10.0, 0.0]]))[0]
    s_w, s_n = model.shift_vectors(tokens, tokens, labels, torch.Generator().manual_seed(0))
    delta = model.dictionary.offset(torch.tensor([[10.0, 0.0]]))
    assert torch.allclose(s_w, model.shift_projection(delta), atol=1e-5)  # class shift == modality shift here
    assert s_w.shape == s_n.shape == (1, 4)


def test_classifier_outputs_and_missing_view():
    torch.manual_seed(0)
    model = FusionClassifier(token_dim=6, n_classes=3, dim=8, blocks=2, heads=2, atoms=4)
    wli, nbi = torch.randn(5, 4, 6), torch.randn(5, 4, 6)
    out = model.predict(wli, nbi)
    assert out["probs"].shape == (5, 3) and torch.allclose(out["probs"].sum(1), torch.ones(5))
    assert out["embedding"].shape == (5, 8) and ((out["conflict"] >= 0) & (out["conflict"] <= 1)).all()
    drop = torch.tensor([[False, True]] * 5)
    _, h_n_dropped, _ = model.encode(wli, nbi, drop)
    _, h_n_other, _ = model.encode(wli, torch.randn(5, 4, 6), drop)
    assert torch.allclose(h_n_dropped, h_n_other)  # a dropped view's content does not matter


def test_tokens_are_standardised_per_channel_and_modality():
    model = FusionClassifier(token_dim=3, n_classes=2, dim=8, blocks=1, heads=2, atoms=2)
    scale = torch.tensor([1e-3, 1.0, 1e3])
    tokens = torch.randn(50, 2, 4, 3) * scale + torch.tensor([[[5.0]], [[-5.0]]])
    model.fit_standardisation(tokens)
    assert torch.allclose(model.token_std[0], scale, rtol=0.2)
    assert torch.allclose(model.token_mean[:, :2], torch.tensor([[5.0], [-5.0]]).expand(2, 2), atol=0.5)
    # a channel's scale no longer matters: scaling it along with the statistics changes nothing
    wli, nbi = tokens[:5, 0], tokens[:5, 1]
    before = model.predict(wli, nbi)["probs"]
    model.token_mean[:, 2] *= 10
    model.token_std[:, 2] *= 10
    boosted = torch.tensor([1.0, 1.0, 10.0])
    assert torch.allclose(model.predict(wli * boosted, nbi * boosted)["probs"], before, atol=1e-5)

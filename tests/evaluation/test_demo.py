"""The synthetic demo generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from mics_core.evaluation.demo import CLASSES, NBI, WLI, generate, make_scene, render, render_pair


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.png"))}


def test_generator_is_deterministic_and_independent_of_worker_count(tmp_path):
    generate(tmp_path / "a", pairs=8, seed=3, size=64, workers=1)
    generate(tmp_path / "b", pairs=8, seed=3, size=64, workers=2)
    generate(tmp_path / "c", pairs=8, seed=4, size=64, workers=1)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def test_manifest_is_an_import_manifest_with_balanced_labels(tmp_path):
    manifest = pd.read_csv(generate(tmp_path, pairs=12, size=64, workers=1))
    assert list(manifest.columns) == ["case_id", "wli_path", "nbi_path", "label"]
    assert manifest["label"].value_counts().to_dict() == dict.fromkeys(CLASSES, 3)
    assert all((tmp_path / p).is_file() for p in manifest["wli_path"].tolist() + manifest["nbi_path"].tolist())
    assert "SYNTHETIC" in (tmp_path / "README.txt").read_text()


def test_wli_and_nbi_show_the_same_scene_in_different_colours():
    wli, nbi = render_pair(seed=0, index=1, label="polyp", size=96)
    assert wli.shape == nbi.shape == (96, 96, 3)
    assert wli[..., 0].mean() > nbi[..., 0].mean() + 20  # WLI is red-pink, NBI is not
    other_wli, _ = render_pair(seed=0, index=2, label="polyp", size=96)
    same = np.corrcoef(wli.mean(-1).ravel(), nbi.mean(-1).ravel())[0, 1]
    different = np.corrcoef(wli.mean(-1).ravel(), other_wli.mean(-1).ravel())[0, 1]
    assert same > different


def test_nbi_shows_vessels_with_more_contrast_than_wli():
    scene = make_scene(np.random.default_rng(0), "normal", 128)
    vessels = scene["fine_vessel"] > 0.5
    contrast = {}
    for name, palette in (("wli", WLI), ("nbi", NBI)):
        grey = render(scene, palette, 128).astype(float).mean(-1)
        contrast[name] = (grey[~vessels].mean() - grey[vessels].mean()) / grey.mean()
    assert contrast["nbi"] > 2 * contrast["wli"] > 0

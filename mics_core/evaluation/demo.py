"""Synthetic paired WLI/NBI endoscopy images for the demo and for tests.

SYNTHETIC DATA: these images are rendered, not photographed. Each case is one scene —
mucosa texture, superficial and deep vessels, a lesion, folds, specular highlights,
vignetting — rendered twice: once with white-light colours and once with NBI's look
(brown superficial capillaries, teal deeper vessels, higher vessel contrast). The two
images of a pair therefore show the same lesion, as real WLI/NBI pairs do.

Classes are learnable but not trivial: every cue has a random strength (some cases are
subtle), nuisance factors (colour, light, scale, position, blur, folds, highlights) are
shared by all classes, and cues are split between modalities — a polyp is a faint bump
in WLI but shows dense irregular vessels in NBI; colitis is clearest as redness and
granularity in WLI — so the fusion of both views has something to add.

Every case draws from its own seeded generator, so the output is identical whatever
the number of worker processes.
"""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

CLASSES = ("normal", "polyp", "ulcerative-colitis", "esophagitis")
README = """SYNTHETIC DEMO DATA — rendered by mics_core.evaluation.demo, not real patients.
{pairs} paired WLI/NBI cases, {size}x{size} px, seed {seed}, classes: {classes}.
manifest.csv holds the ground-truth label of every case (for benchmarks).
"""


@dataclass(frozen=True)
class Palette:
    """How one modality renders the shared scene layers (RGB colours, alpha strengths)."""

    mucosa: tuple[float, float, float]
    fine_vessel: tuple[tuple[float, float, float], float]
    deep_vessel: tuple[tuple[float, float, float], float]
    lesion_vessel: tuple[tuple[float, float, float], float]
    erythema: tuple[tuple[float, float, float], float]
    fibrin: tuple[tuple[float, float, float], float]
    erosion: tuple[tuple[float, float, float], float]
    polyp_tint: tuple[tuple[float, float, float], float]
    texture: float
    granularity: float
    relief: float


WLI = Palette(
    mucosa=(0.86, 0.50, 0.44),
    fine_vessel=((0.60, 0.18, 0.22), 0.22),
    deep_vessel=((0.62, 0.32, 0.42), 0.14),
    lesion_vessel=((0.62, 0.22, 0.25), 0.12),
    erythema=((0.85, 0.16, 0.14), 0.55),
    fibrin=((0.96, 0.92, 0.78), 0.75),
    erosion=((0.97, 0.88, 0.72), 0.65),
    polyp_tint=((0.92, 0.58, 0.50), 0.20),
    texture=0.12,
    granularity=0.22,
    relief=0.30,
)
NBI = Palette(
    mucosa=(0.52, 0.60, 0.53),
    fine_vessel=((0.34, 0.17, 0.07), 0.80),
    deep_vessel=((0.08, 0.42, 0.50), 0.55),
    lesion_vessel=((0.30, 0.13, 0.05), 0.90),
    erythema=((0.45, 0.33, 0.24), 0.30),
    fibrin=((0.84, 0.90, 0.88), 0.60),
    erosion=((0.82, 0.88, 0.82), 0.50),
    polyp_tint=((0.48, 0.40, 0.30), 0.25),
    texture=0.10,
    granularity=0.10,
    relief=0.22,
)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1] with about `cells` features across the image."""
    coarse = Image.fromarray(rng.standard_normal((cells + 1, cells + 1)).astype(np.float32), mode="F")
    field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))
    return field / (np.abs(field).max() + 1e-6)


def _vessels(
    rng: np.random.Generator, size: int, count: int, width: float, tortuosity: float, region: np.ndarray | None = None
) -> np.ndarray:
    """A map in [0, 1] of branching random-walk vessels, optionally kept inside `region`."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    walks = [(rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, 2 * np.pi), width) for _ in range(count)]
    while walks:
        x, y, angle, w = walks.pop()
        points = [(x, y)]
        for _ in range(int(rng.integers(15, 45))):
            angle += rng.normal(0, tortuosity)
            x, y = x + 4 * np.cos(angle), y + 4 * np.sin(angle)
            points.append((x, y))
            if w > 1.2 and rng.random() < 0.04:
                walks.append((x, y, angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), w * 0.7))
        draw.line(points, fill=255, width=max(1, round(w)))
    vessels = gaussian_filter(np.asarray(canvas, np.float32) / 255, 0.7)
    return vessels * region if region is not None else vessels


def _blob(size: int, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """A soft ellipse in [0, 1] (1 inside, smooth edge)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    return np.clip(1.5 - 1.5 * np.sqrt(u**2 + v**2), 0, 1) ** 0.7


def make_scene(rng: np.random.Generator, label: str, size: int) -> dict[str, np.ndarray | float]:
    """The layers of one case; `render` turns them into a WLI or an NBI image."""
    scale = rng.uniform(0.8, 1.25)
    strength = rng.uniform(0.3, 1.0)
    zero = np.zeros((size, size), np.float32)
    layers: dict[str, np.ndarray | float] = {
        "texture": _noise(rng, size, 6) * 0.6 + _noise(rng, size, 24) * 0.4,
        "fine_vessel": _vessels(rng, size, int(rng.integers(8, 16)), 2.2 / scale, 0.35),
        "deep_vessel": _vessels(rng, size, int(rng.integers(3, 7)), 4.0 / scale, 0.15),
        "lesion_vessel": zero,
        "erythema": zero,
        "fibrin": zero,
        "erosion": zero,
        "polyp_tint": zero,
        "granular": zero,
        "relief": zero,
    }
    folds = sum(
        _blob(
            size,
            *rng.uniform(0, size, 2),
            size * rng.uniform(0.4, 0.8),
            size * rng.uniform(0.04, 0.08),
            rng.uniform(0, np.pi),
        )
        for _ in range(int(rng.integers(0, 3)))
    )
    layers["relief"] = -0.6 * np.clip(folds, 0, 1)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    if label == "polyp":
        r = size * rng.uniform(0.09, 0.22) * scale
        mask = _blob(size, cx, cy, r, r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi))
        lit = _blob(size, cx - r * 0.3, cy - r * 0.3, r * 0.6, r * 0.6, 0.0)
        layers["relief"] = layers["relief"] + strength * (
            0.5 * lit - 0.4 * (mask - _blob(size, cx, cy, r * 0.8, r * 0.8, 0))
        )
        layers["polyp_tint"] = mask * strength
        layers["lesion_vessel"] = _vessels(rng, size, int(12 + 18 * strength), 1.6, 0.9, region=mask) * 1.6
        layers["fine_vessel"] = layers["fine_vessel"] * (1 - mask)
    elif label == "ulcerative-colitis":
        patch = np.clip(_noise(rng, size, 3) * 1.5 + strength, 0, 1)
        layers["erythema"] = patch * strength
        layers["granular"] = patch * strength * (rng.random((size, size)) > 0.5)
        layers["fine_vessel"] = layers["fine_vessel"] * (1 - 0.85 * patch * strength)
        spots = (gaussian_filter(rng.random((size, size)), 2) > 0.62 - 0.04 * strength) * patch
        layers["fibrin"] = gaussian_filter(spots.astype(np.float32), 1.0) * strength
    elif label == "esophagitis":
        streaks = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            angle = rng.uniform(0, 2 * np.pi)
            length = size * rng.uniform(0.12, 0.3) * scale
            streaks += _blob(
                size,
                cx + np.cos(angle) * length,
                cy + np.sin(angle) * length,
                length,
                size * rng.uniform(0.012, 0.03),
                angle,
            )
        layers["erosion"] = np.clip(streaks, 0, 1) * strength
        layers["erythema"] = gaussian_filter(np.clip(streaks, 0, 1), 6) * 0.6 * strength
    layers["highlights"] = sum(
        _blob(size, *rng.uniform(0, size, 2), rng.uniform(1.5, 7), rng.uniform(1.5, 4), rng.uniform(0, np.pi))
        for _ in range(int(rng.integers(2, 9)))
    )
    layers["light"] = rng.uniform(0.75, 1.1)
    layers["tint"] = rng.normal(0, 0.04, 3).astype(np.float32)
    layers["blur"] = rng.uniform(0, 1.4)
    layers["center"] = rng.uniform(0.4, 0.6, 2)
    layers["sensor"] = rng.standard_normal((size, size, 3)).astype(np.float32) * 0.015
    return layers


def render(scene: dict, palette: Palette, size: int) -> np.ndarray:
    """One modality's view of a scene as uint8 RGB."""
    img = np.ones((size, size, 3), np.float32) * (np.array(palette.mucosa) + scene["tint"]).astype(np.float32)
    img *= 1 + palette.texture * scene["texture"][..., None]
    for name in ("deep_vessel", "fine_vessel", "lesion_vessel", "polyp_tint", "erythema", "erosion", "fibrin"):
        colour, alpha = getattr(palette, name)
        a = np.clip(alpha * scene[name], 0, 1)[..., None]
        img = img * (1 - a) + np.array(colour, np.float32) * a
    img *= 1 + palette.granularity * (scene["granular"] - 0.5 * (scene["granular"] > 0))[..., None]
    img *= 1 + palette.relief * scene["relief"][..., None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    radius = np.hypot(xx - scene["center"][0], yy - scene["center"][1])
    img *= (scene["light"] * np.clip(1.2 - 1.6 * radius**1.5, 0.05, 1))[..., None]
    img = gaussian_filter(img, (scene["blur"], scene["blur"], 0)) + scene["sensor"]
    img = img + np.clip(scene["highlights"], 0, 1)[..., None]
    frame = np.hypot(xx - 0.5, yy - 0.5) < 0.54
    return (np.clip(img, 0, 1) * frame[..., None] * 255).astype(np.uint8)


def render_pair(seed: int, index: int, label: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    scene = make_scene(np.random.default_rng([seed, index]), label, size)
    return render(scene, WLI, size), render(scene, NBI, size)


def _write_case(args: tuple[Path, int, int, str, str, int]) -> None:
    out, seed, index, case_id, label, size = args
    wli, nbi = render_pair(seed, index, label, size)
    Image.fromarray(wli).save(out / "WLI" / f"{case_id}.png", compress_level=1)
    Image.fromarray(nbi).save(out / "NBI" / f"{case_id}.png", compress_level=1)


def generate(out: Path, pairs: int = 600, seed: int = 0, size: int = 256, workers: int = 2) -> Path:
    """Write `pairs` synthetic cases to `out` (WLI/, NBI/, manifest.csv); return the manifest."""
    out = Path(out)
    (out / "WLI").mkdir(parents=True, exist_ok=True)
    (out / "NBI").mkdir(parents=True, exist_ok=True)
    labels = np.random.default_rng(seed).permutation([CLASSES[i % len(CLASSES)] for i in range(pairs)])
    width = len(str(pairs))
    jobs = [(out, seed, i, f"demo-{i + 1:0{width}d}", str(labels[i]), size) for i in range(pairs)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_case, jobs, chunksize=16))
    else:
        for job in jobs:
            _write_case(job)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "wli_path", "nbi_path", "label"])
        for _, _, _, case_id, label, _ in jobs:
            writer.writerow([case_id, f"WLI/{case_id}.png", f"NBI/{case_id}.png", label])
    (out / "README.txt").write_text(README.format(pairs=pairs, size=size, seed=seed, classes=", ".join(CLASSES)))
    return manifest

"""Is the synthetic demo data learnable but not trivial?

Trains the same small CNN (GroupNorm, so train and eval modes agree; WLI and NBI stacked
as 6 channels, 64x64) on 5 % and on all
of the training pairs of a generated dataset, with the same number of optimiser steps,
and prints held-out accuracy for each, mean ± std over seeds. The demo is doing its job
when 5 % is clearly below 100 % and 100 % is well above chance.

    python -m bench.demo_difficulty [--pairs 1000] [--seeds 2] [--steps 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from mics_core.evaluation.demo import CLASSES, generate


def load(manifest: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    frame = pd.read_csv(manifest)
    root = manifest.parent
    arrays = [
        np.concatenate(
            [
                np.asarray(Image.open(root / row[col]).resize((size, size), Image.Resampling.BILINEAR))
                for col in ("wli_path", "nbi_path")
            ],
            axis=-1,
        )
        for _, row in frame.iterrows()
    ]
    x = torch.tensor(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([CLASSES.index(label) for label in frame["label"]])
    return x, y


def small_cnn() -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(
        block(6, 16),
        block(16, 32),
        block(32, 64),
        block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, len(CLASSES)),
    )


def train_eval(x_train, y_train, x_test, y_test, steps: int, seed: int, lr: float) -> float:
    torch.manual_seed(seed)
    model = small_cnn()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(x_train), (min(32, len(x_train)),), generator=generator)
        images = x_train[batch]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        loss = nn.functional.cross_entropy(model(images), y_train[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--data", type=Path, help="reuse a dataset made by `python -m mics_core demo`")
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            manifest = args.data / "manifest.csv"
        else:
            start = time.perf_counter()
            manifest = generate(Path(tmp), pairs=args.pairs, seed=0)
            print(f"generated {args.pairs} pairs in {time.perf_counter() - start:.1f} s")
        x, y = load(manifest, args.size)
    n_test = len(x) // 5
    results: dict[str, list[float]] = {"5 %": [], "100 %": []}
    for seed in range(args.seeds):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        test, train = order[:n_test], order[n_test:]
        few = train[: max(len(CLASSES), len(train) // 20)]
        for name, idx in (("5 %", few), ("100 %", train)):
            results[name].append(train_eval(x[idx], y[idx], x[test], y[test], args.steps, seed, args.lr))
            print(f"  seed {seed} labels {name:>5}: {results[name][-1]:.3f}", flush=True)
    print(f"small CNN, {args.steps} steps, held-out {n_test} pairs, chance {1 / len(CLASSES):.2f}")
    for name, accs in results.items():
        print(f"  labels {name:>5}: accuracy {np.mean(accs):.3f} ± {np.std(accs):.3f}")
    print(f"  ratio 5 % / 100 %: {np.mean(results['5 %']) / np.mean(results['100 %']):.2f}")


if __name__ == "__main__":
    main()

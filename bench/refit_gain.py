"""What does training the version's model again on every label (`refit`) buy?

MICS on the benchmark's splits, with the model kept as trained without the calibration
hold-out (the plain baseline) and with the refit on every label; the temperature comes
from the first model in both. Pre-training is shared through the bench cache.

    python -m bench.refit_gain --data MANIFEST.csv [--fractions 0.1 0.2] [--seeds 3] [--cache data/bench-cache]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mics_core.config import TrainSettings
from mics_core.evaluation.benchmark import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("data/bench-cache"))
    args = parser.parse_args()
    print("| labels | model | accuracy | per seed | ECE |")
    print("|---|---|---|---|---|")
    for fraction in args.fractions:
        for refit in (False, True):
            settings = TrainSettings().replace(refit=refit)
            rows = run_benchmark(args.data, fraction, args.seeds, settings, ("mics",), cache=args.cache, log=str)
            accuracy = np.array([r["accuracy"] for r in rows])
            ece = np.mean([r["ece"] for r in rows])
            name = "refit on every label" if refit else "without the hold-out (baseline)"
            per_seed = ", ".join(f"{a:.3f}" for a in accuracy)
            print(
                f"| {fraction:.0%} | {name} | {accuracy.mean():.3f} ± {accuracy.std():.3f} | {per_seed} | {ece:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

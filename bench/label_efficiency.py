"""The label-efficiency curve: every method at 5, 10, 20, 50 and 100 % labels, same splits and seeds.

    python -m bench.label_efficiency --data MANIFEST.csv [--fractions 0.05 0.1 0.2 0.5 1] [--seeds 3]
        [--methods ...] [--cache data/bench-cache] [--out bench/results/label-efficiency-hyperkvasir]

Writes OUT.json (every row), OUT.md (accuracy and ECE, mean ± std over seeds) and OUT.svg (the
curve). Rows already in OUT.json for other (fraction, method) pairs are kept, so a curve can be
completed run by run. Frozen features are cached under --cache, so each fraction after the
first costs only the methods' own training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mics_core.config import TrainSettings
from mics_core.evaluation.benchmark import METHODS, run_benchmark


def table(rows: list[dict], key: str) -> str:
    fractions = sorted({r["fraction"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
    for name in methods:
        cells = []
        for f in fractions:
            values = [r[key] for r in rows if r["method"] == name and r["fraction"] == f]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["method"] for r in rows):
        fractions = sorted({r["fraction"] for r in rows if r["method"] == name})
        mean = [np.mean([r["accuracy"] for r in rows if r["method"] == name and r["fraction"] == f]) for f in fractions]
        axes.plot([100 * f for f in fractions], mean, marker="o", label=name)
    axes.set(xscale="log", xlabel="labelled share of the training pool (%)", ylabel="test accuracy", title=title)
    axes.set_xticks([5, 10, 20, 50, 100], ["5", "10", "20", "50", "100"])
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--cache", type=Path, default=Path("data/bench-cache"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/label-efficiency"))
    args = parser.parse_args()
    settings = TrainSettings.from_env()
    path = args.out.with_suffix(".json")
    rows = json.loads(path.read_text()) if path.exists() else []
    for fraction in args.fractions:
        print(f"== {fraction:.0%} labels", flush=True)
        found = run_benchmark(args.data, fraction, args.seeds, settings, tuple(args.methods), cache=args.cache)
        rows = [r for r in rows if r["fraction"] != fraction or r["method"] not in args.methods]
        rows += [r | {"fraction": fraction} for r in found]
        args.out.with_suffix(".json").write_text(
            json.dumps(rows, indent=1)
        )  # after each fraction: a partial run counts
    report = f"Accuracy\n\n{table(rows, 'accuracy')}\n\nECE\n\n{table(rows, 'ece')}\n"
    args.out.with_suffix(".md").write_text(report)
    plot(rows, args.out.with_suffix(".svg"), f"{args.data.parent.name}, {args.seeds} seeds")
    print(report)


if __name__ == "__main__":
    main()

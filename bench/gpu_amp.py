"""bf16 autocast against fp32 on the same short stage-1 pre-training: same seed, same generated
demo pairs, same steps. Reports each arm's final losses (mean of the last 5 steps), the largest
relative difference of the total loss along the curve, whether any loss went NaN/inf, and the
speed-up (median step time after warm-up).

The fp32 arm switches autocast off inside this script (`mics_core.train.pretrain.autocast` is
replaced by a null context for that arm), so no library setting is needed; TF32 matmuls stay
off (PyTorch's default), so fp32 means full fp32. On the CPU both arms run fp32 (autocast is a
no-op there): the dry run checks the plumbing, not the numbers.

    python -m bench.gpu_amp [--device cuda] [--steps 30] [--backbone vit_small_patch16_224]
                            [--image-size 224] [--batch 64] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.gpu_throughput import save_report, sync
from mics_core.config import TrainSettings
from mics_core.data import load_pairs, records_from_manifest
from mics_core.evaluation.demo import generate
from mics_core.progress import Reporter
from mics_core.train.loop import TrainingDiverged, run

# the attribute `mics_core.train.pretrain` is the function the package exports; this is the module
pretrain_module = importlib.import_module("mics_core.train.pretrain")
WARMUP = 5


def run_arm(images: torch.Tensor, settings: TrainSettings, steps: int, amp: bool) -> dict[str, object]:
    """One pre-training of `steps` steps; `amp` False replaces the library's autocast by a null context."""
    original = pretrain_module.autocast
    if not amp:
        pretrain_module.autocast = lambda device: contextlib.nullcontext()
    stamps: list[float] = []
    try:
        method = pretrain_module.SynergisticPretraining(images, settings)
        device = method.device

        def on_step(phase: str, step: int, total: int, losses: dict[str, float]) -> None:
            sync(device)
            stamps.append(time.perf_counter())

        sync(device)
        stamps.append(time.perf_counter())
        error = None
        try:
            history = run(method, steps, Reporter(on_step=on_step)).history
        except TrainingDiverged as exc:  # the loop stops on a non-finite loss before the weights take it
            history, error = [], str(exc)
    finally:
        pretrain_module.autocast = original
    times = [b - a for a, b in itertools.pairwise(stamps)]
    timed = times[WARMUP:] or times
    tail = history[-5:]
    final = {k: sum(r[k] for r in tail) / len(tail) for k in tail[0]} if tail else {}
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "amp": "bf16" if amp and device.type == "cuda" else "fp32",
        "steps_run": len(history),
        "final": final,
        "total_curve": [r["total"] for r in history],
        "non_finite": error is not None or any(not math.isfinite(v) for r in history for v in r.values()),
        "error": error,
        "step_seconds_median": statistics.median(timed) if timed else None,
        "peak_memory_gib": peak,
        # fp32 here means what PyTorch's defaults give: TF32 off for matmuls, on for cuDNN convolutions
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }


def compare(bf16: dict[str, object], fp32: dict[str, object]) -> dict[str, object]:
    a, b = bf16["total_curve"], fp32["total_curve"]
    diffs = [abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b, strict=False)]
    final_rel = {
        k: abs(bf16["final"][k] - fp32["final"][k]) / max(abs(fp32["final"][k]), 1e-8)
        for k in fp32["final"]
        if k in bf16["final"]
    }
    sa, sb = bf16["step_seconds_median"], fp32["step_seconds_median"]
    return {
        "max_relative_difference_total": max(diffs) if diffs else None,
        "final_relative_difference": final_rel,
        "any_non_finite": bool(bf16["non_finite"] or fp32["non_finite"]),
        "speedup_bf16_over_fp32": sb / sa if sa and sb else None,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    gpu = TrainSettings.preset("gpu")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--backbone", default=gpu.pretrain.backbone)
    parser.add_argument("--image-size", type=int, default=gpu.pretrain.image_size)
    parser.add_argument("--batch", type=int, default=gpu.pretrain.batch)
    parser.add_argument("--pairs", type=int, default=None, help="demo pairs generated (default 2 batches)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available; use --device cpu for a dry run")
    pairs = args.pairs or 2 * args.batch
    settings = TrainSettings.preset(
        "gpu" if args.device.startswith("cuda") else "cpu",
        device=args.device,
        seed=args.seed,
        backbone=args.backbone,
        image_size=args.image_size,
        pretrain_batch=args.batch,
        pretrain_epochs=math.ceil(args.steps / max(1, pairs // args.batch)),
    )
    if not args.device.startswith("cuda"):
        settings = settings.replace(queue_size=min(settings.pretrain.queue_size, 4 * args.batch), proj_dim=32)
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))
    with tempfile.TemporaryDirectory() as tmp:
        records, _ = records_from_manifest(
            generate(Path(tmp), pairs=pairs, seed=args.seed, size=args.image_size, workers=workers)
        )
        images = load_pairs(records, args.image_size)
    arms = {
        "bf16": run_arm(images, settings, args.steps, amp=True),
        "fp32": run_arm(images, settings, args.steps, amp=False),
    }
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "steps": args.steps,
        "pairs": pairs,
        **compare(arms["bf16"], arms["fp32"]),
        "arms": arms,
    }
    for name, arm in arms.items():
        final = ", ".join(f"{k} {v:.4f}" for k, v in arm["final"].items())
        step = arm["step_seconds_median"]
        print(f"{name}: {arm['steps_run']} steps, {step * 1e3 if step else float('nan'):.1f} ms/step; final: {final}")
        if arm["error"]:
            print(f"{name}: {arm['error']}")
    diff, speedup = report["max_relative_difference_total"], report["speedup_bf16_over_fp32"]
    print(
        f"max relative difference of the total loss {diff if diff is None else f'{diff:.3%}'}; "
        f"non-finite: {report['any_non_finite']}; "
        f"speed-up bf16/fp32 {speedup if speedup is None else f'{speedup:.2f}x'}"
    )
    return save_report(report, args.json)


if __name__ == "__main__":
    main()

"""Throughput of the learning core on a GPU, against plain timm loops of the same encoders in
the same run:

- pre-training: images/s of `SynergisticPretraining` steps (2 images a pair) against a plain
  training loop of the two timm encoders (bf16 autocast, channels-last, AdamW, a trivial loss),
  target ratio >= 0.8;
- batch prediction: images/s of `mics_core.features.encode_pairs` (frozen encoders) against a
  plain forward loop (pinned uint8 batches, non-blocking copies, bf16), target ratio >= 0.9;
- model FLOPs utilisation: FLOPs of one step counted by `torch.utils.flop_counter.FlopCounterMode`,
  over the measured step time, over the device's dense bf16 peak (a small table by device name);
- feeding: GPU idle share (1 - kernel time / wall time, kernels from torch.profiler) of the
  plain loop fed by a DataLoader over decoded uint8 tensors (pin_memory, non_blocking copies),
  and of the library's pre-training step, which augments on the CPU and copies pageable memory.

    python -m bench.gpu_throughput [--device cuda] [--steps 20] [--backbone vit_small_patch16_224]
                                   [--image-size 224] [--batch 64] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from mics_core.config import TrainSettings
from mics_core.devices import autocast
from mics_core.features import build_encoders, encode_pairs

pretrain_module = importlib.import_module("mics_core.train.pretrain")  # the package's `pretrain` is a function
WARMUP = 3
# dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name() (first match wins)
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save_report(report: dict[str, object], path: Path | None) -> dict[str, object]:
    """Write `report` as JSON to `path` (when given) and return it."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    return report


def timed(step: Callable[[int], None], steps: int, device: torch.device) -> float:
    """Median seconds of `step(i)` over `steps` calls after WARMUP untimed ones."""
    for i in range(WARMUP):
        step(i)
    times = []
    for i in range(steps):
        sync(device)
        start = time.perf_counter()
        step(WARMUP + i)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def idle_share(step: Callable[[int], None], steps: int, device: torch.device) -> float | None:
    """1 - (summed GPU kernel and copy time) / wall time over `steps` steps; None without CUDA."""
    if device.type != "cuda":
        return None
    step(0)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for i in range(steps):
            step(1 + i)
        sync(device)
        wall = time.perf_counter() - start
    # what the profiler's table sums as "Self CUDA time total": the device-side events (kernels, copies), in µs
    busy = sum(e.self_device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    return max(0.0, 1.0 - busy / 1e6 / wall)


class PlainPair(torch.nn.Module):
    """The two encoders as plain timm models (what the library's Encoder wraps), features pooled."""

    def __init__(self, backbone: str, image_size: int) -> None:
        super().__init__()
        probe = timm.create_model(backbone, pretrained=False, num_classes=0)
        kwargs = {"img_size": image_size} if hasattr(probe, "patch_embed") else {}
        self.nets = torch.nn.ModuleList(
            timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs) for _ in range(2)
        )
        cfg = probe.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5,) * 3)).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.5,) * 3)).view(1, 3, 1, 1) * 255)

    def forward(self, pairs: torch.Tensor, features: bool = False) -> list[torch.Tensor]:
        x = (pairs.float() - self.mean.unsqueeze(1)) / self.std.unsqueeze(1)
        call = (lambda net, v: net.forward_features(v)) if features else (lambda net, v: net(v))
        return [call(net, x[:, i].contiguous(memory_format=torch.channels_last)) for i, net in enumerate(self.nets)]


def main(argv: list[str] | None = None) -> dict[str, object]:
    gpu = TrainSettings.preset("gpu")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (and batches) of each loop")
    parser.add_argument("--backbone", default=gpu.pretrain.backbone)
    parser.add_argument("--image-size", type=int, default=gpu.pretrain.image_size)
    parser.add_argument("--batch", type=int, default=gpu.pretrain.batch)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the feeding check")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available; use --device cpu for a dry run")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    pairs = 4 * args.batch
    settings = TrainSettings.preset(
        "gpu" if cuda else "cpu",
        device=args.device,
        backbone=args.backbone,
        image_size=args.image_size,
        pretrain_batch=args.batch,
        pretrain_epochs=1000,
    )
    if not cuda:
        settings = settings.replace(queue_size=4 * args.batch, proj_dim=32)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (pairs, 2, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=generator
    )
    per_step_images = 2 * args.batch
    peak = peak_flops(device)
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "peak_bf16_flops": peak,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
    }

    # pre-training: the library's step, as the loop runs it
    method = pretrain_module.SynergisticPretraining(images, settings)

    def library_step(i: int) -> None:
        losses = method.train_step(i)
        losses["total"].item()  # the loop reads every loss (a sync) before the backward
        method.optimiser.zero_grad(set_to_none=True)
        losses["total"].backward()
        method.optimiser.step()
        method.schedule.step()
        method.after_step(i)

    lib_s = timed(library_step, args.steps, device)
    lib_flops = count_flops(lambda: library_step(0))
    lib_idle = idle_share(library_step, min(args.steps, 10), device)

    # pre-training: a plain timm loop of the same encoders, fed by a DataLoader of uint8 tensors
    plain = PlainPair(args.backbone, args.image_size).to(device)
    if cuda:
        plain = plain.to(memory_format=torch.channels_last)
    plain.train()
    optimiser = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    loader = DataLoader(
        TensorDataset(images),
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        pin_memory=cuda,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    batches = iter(())

    def next_batch() -> torch.Tensor:
        nonlocal batches
        try:
            return next(batches)[0]
        except StopIteration:
            batches = iter(loader)
            return next(batches)[0]

    def plain_step(i: int) -> None:
        batch = next_batch().to(device, non_blocking=True)
        with autocast(device):
            out = plain(batch)
            loss = sum(o.float().pow(2).mean() for o in out)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    plain_s = timed(plain_step, args.steps, device)
    plain_flops = count_flops(lambda: plain_step(0))
    plain_idle = idle_share(plain_step, min(args.steps, 10), device)

    # batch prediction: the library's frozen-encoder feature extraction against a plain forward loop
    encoders = build_encoders(None, settings)
    pred_images = images[: 2 * args.batch] if not cuda else torch.cat([images] * 2)
    encode_pairs(encoders, pred_images[: args.batch], device, args.batch)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(max(1, args.steps // 4)):
        encode_pairs(encoders, pred_images, device, args.batch)
    sync(device)
    lib_pred = 2 * len(pred_images) * max(1, args.steps // 4) / (time.perf_counter() - start)
    plain.eval()
    pinned = pred_images.pin_memory() if cuda else pred_images

    @torch.no_grad()
    def plain_predict(chunks: torch.Tensor) -> None:
        for s in range(0, len(chunks), args.batch):
            with autocast(device):
                out = plain(chunks[s : s + args.batch].to(device, non_blocking=True), features=True)
            torch.stack(out, 1).float().cpu()

    plain_predict(pinned[: args.batch])
    sync(device)
    start = time.perf_counter()
    for _ in range(max(1, args.steps // 4)):
        plain_predict(pinned)
    sync(device)
    plain_pred = 2 * len(pred_images) * max(1, args.steps // 4) / (time.perf_counter() - start)
    with torch.no_grad():
        pred_flops = count_flops(lambda: encode_pairs(encoders, pred_images[: args.batch], device, args.batch))

    def mfu(flops: int, seconds: float) -> float | None:
        return flops / seconds / peak if peak else None

    report |= {
        "pretrain_images_per_s": per_step_images / lib_s,
        "plain_train_images_per_s": per_step_images / plain_s,
        "pretrain_ratio": plain_s / lib_s,
        "pretrain_ratio_target": 0.8,
        "predict_images_per_s": lib_pred,
        "plain_predict_images_per_s": plain_pred,
        "predict_ratio": lib_pred / plain_pred,
        "predict_ratio_target": 0.9,
        "pretrain_step_flops": lib_flops,
        "plain_step_flops": plain_flops,
        "predict_batch_flops": pred_flops,
        "pretrain_mfu": mfu(lib_flops, lib_s),
        "plain_train_mfu": mfu(plain_flops, plain_s),
        "predict_mfu": mfu(pred_flops, 2 * args.batch / lib_pred),
        "pretrain_gpu_idle_share": lib_idle,
        "plain_loader_gpu_idle_share": plain_idle,
    }

    def pct(value: float | None) -> str:
        return "unknown" if value is None else f"{value:.1%}"

    print(f"device {report['device']}, {args.backbone} @ {args.image_size}, batch {args.batch} pairs")
    print(
        f"pre-training {report['pretrain_images_per_s']:.1f} img/s"
        f" vs plain timm {report['plain_train_images_per_s']:.1f}"
        f" -> {report['pretrain_ratio']:.2f}x (target >= 0.8); MFU {pct(report['pretrain_mfu'])}"
        f" (plain {pct(report['plain_train_mfu'])}); {lib_flops / 1e9:.1f} GFLOP a step"
    )
    print(
        f"prediction {lib_pred:.1f} img/s vs plain forward {plain_pred:.1f} -> {report['predict_ratio']:.2f}x"
        f" (target >= 0.9); MFU {pct(report['predict_mfu'])}"
    )
    print(
        f"GPU idle share: library pre-training step {pct(lib_idle)}; plain loop fed by a pinned uint8 DataLoader"
        f" {pct(plain_idle)}"
    )
    return save_report(report, args.json)


if __name__ == "__main__":
    main()

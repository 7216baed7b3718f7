"""Which backbone and image size fit a laptop? Times one pre-training step (all four
losses, both encoders, batch 32) and frozen-feature extraction per pair, per candidate,
and checks that the backbone can learn stage 1 at all: the cross-modal InfoNCE after 24
steps on 48 demo pairs (contrastive terms only, no colour jitter, batch 16; chance is
ln 16 = 2.77). A fast backbone that stays at chance here only makes its features worse.

    python -m bench.backbone_speed [--candidates resnet18:128 resnet10t:64 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from mics_core.config import TrainSettings
from mics_core.data import load_pairs, records_from_manifest
from mics_core.evaluation.demo import generate
from mics_core.features import build_encoders, encode_pairs
from mics_core.model.pretraining import SynergisticPretrainer
from mics_core.train.pretrain import cross_modal_check

DEFAULT = [
    "resnet18:128",
    "resnet18:64",
    "resnet10t:128",
    "resnet10t:96",
    "resnet10t:64",
    "efficientnet_b0:64",
    "mobilenetv3_small_100:128",
    "mobilenetv3_small_100:64",
]


def time_candidate(backbone: str, size: int, batch: int = 32, steps: int = 3) -> tuple[float, float, float]:
    settings = TrainSettings().replace(backbone=backbone, image_size=size, pretrain_batch=batch)
    torch.manual_seed(0)
    model = SynergisticPretrainer(settings.pretrain)
    optimiser = torch.optim.AdamW(model.generator_parameters(), lr=1e-4)
    images = torch.randint(0, 255, (batch, 2, 3, size, size), dtype=torch.uint8)
    wli, nbi = (model.encoders[m].normalise(images[:, i]) for i, m in enumerate(("wli", "nbi")))
    timings = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        losses, recon, real = model.losses(wli, nbi)
        optimiser.zero_grad()
        model.total(losses).backward()
        optimiser.step()
        model.discriminator_loss(recon, real).backward()
        model.after_step()
        timings.append(time.perf_counter() - start)
    step = sorted(timings[1:])[len(timings[1:]) // 2]
    encoders = build_encoders(None, settings)
    start = time.perf_counter()
    encode_pairs(encoders, torch.randint(0, 255, (64, 2, 3, size, size), dtype=torch.uint8), torch.device("cpu"))
    per_pair = (time.perf_counter() - start) / 64
    params = sum(p.numel() for p in encoders["wli"].parameters()) / 1e6
    return step, per_pair, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=DEFAULT, help="backbone:size pairs")
    parser.add_argument("--pairs", type=int, default=600, help="dataset size for the per-epoch estimate")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| backbone | size | params/encoder (M) | pre-train step, batch 32 (s) | epoch of "
        f"{args.pairs} pairs (s) | feature extraction (ms/pair) | cross-modal InfoNCE after 24 steps (chance 2.77) |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        records, _ = records_from_manifest(generate(tmp, pairs=48, seed=2, size=128, workers=1))
        for candidate in args.candidates:
            name, size = candidate.split(":")
            step, per_pair, params = time_candidate(name, int(size))
            epoch = step * args.pairs / 32
            settings = TrainSettings().replace(backbone=name, image_size=int(size))
            learnt = cross_modal_check(load_pairs(records, int(size)), settings).final_losses()["aligned"]
            print(
                f"| {name} | {size} | {params:.1f} | {step:.2f} | {epoch:.0f} | {per_pair * 1000:.1f} | {learnt:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

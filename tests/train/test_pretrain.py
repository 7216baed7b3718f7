"""Stage 1 with the CPU preset's backbone learns, not just runs."""

from __future__ import annotations

import math

from mics_core.config import TrainSettings
from mics_core.data import load_pairs, records_from_manifest
from mics_core.evaluation.demo import generate
from mics_core.train.pretrain import cross_modal_check


def test_the_cpu_preset_backbone_learns_to_match_the_two_views_of_a_pair(tmp_path):
    # mobilenetv3_small_100, the CPU default until this was measured, stays at chance here (3.7 after these
    # 24 steps; and still at chance after 150 steps of the full objective, its pre-training leaving the
    # frozen features worse than random ones). The cross-modal task alone, without colour jitter, is the
    # quickest test of whether a backbone can learn it at all.
    records, _ = records_from_manifest(generate(tmp_path, pairs=48, seed=2, size=64, workers=1))
    settings = TrainSettings().replace(image_size=32)
    result = cross_modal_check(load_pairs(records, settings.pretrain.image_size), settings)
    chance = math.log(16)
    assert len(result.history) == 24
    assert result.history[0]["aligned"] > 0.8 * chance
    assert result.final_losses()["aligned"] < 0.5 * chance

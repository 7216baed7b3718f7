"""When a retrain pre-trains again."""

from __future__ import annotations

from mics_core.config import TrainSettings
from mics_core.db.models import ModelVersion
from mics_core.jobs.retrain import needs_pretraining


def _encoders(n_cases: int, **settings) -> ModelVersion:
    defaults = TrainSettings()
    base = {"backbone": defaults.backbone, "image_size": defaults.image_size, "weights": defaults.weights}
    return ModelVersion(
        kind="encoders", checkpoint_path="x", settings={**base, **settings}, metrics={"n_cases": n_cases}
    )


def test_first_retrain_pretrains():
    assert needs_pretraining(None, 10, TrainSettings(), growth=0.5)


def test_encoders_are_reused_until_the_pool_grows_past_the_threshold():
    train = TrainSettings()
    assert not needs_pretraining(_encoders(600), 600, train, growth=0.5)
    assert not needs_pretraining(_encoders(600), 900, train, growth=0.5)
    assert needs_pretraining(_encoders(600), 901, train, growth=0.5)


def test_other_backbone_or_size_pretrains_again():
    train = TrainSettings()
    assert needs_pretraining(_encoders(600, backbone="resnet18"), 600, train, growth=0.5)
    assert needs_pretraining(_encoders(600, image_size=train.image_size * 2), 600, train, growth=0.5)

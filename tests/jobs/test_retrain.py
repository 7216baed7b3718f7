"""When a retrain pre-trains again: whenever the pre-training's identity (its stage's settings)
changed, or the pool grew; never for a change that only stage 2 reads."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mics_core.config import TrainSettings
from mics_core.db.models import ModelVersion
from mics_core.jobs.retrain import needs_pretraining, run_prepare, run_retrain
from mics_core.progress import Reporter
from tests.conftest import make_project


def _encoders(n_cases: int, settings: dict | None = None) -> ModelVersion:
    stored = TrainSettings().to_dict() if settings is None else settings
    return ModelVersion(kind="encoders", checkpoint_path="x", settings=stored, metrics={"n_cases": n_cases})


def test_stage_one_off_never_pretrains():
    assert not needs_pretraining(None, 10, TrainSettings().replace(pretrain_epochs=0), growth=0.5)


def test_first_retrain_pretrains():
    assert needs_pretraining(None, 10, TrainSettings(), growth=0.5)


def test_encoders_are_reused_until_the_pool_grows_past_the_threshold():
    train = TrainSettings()
    assert not needs_pretraining(_encoders(600), 600, train, growth=0.5)
    assert not needs_pretraining(_encoders(600), 900, train, growth=0.5)
    assert needs_pretraining(_encoders(600), 901, train, growth=0.5)


def test_any_other_pretraining_setting_pretrains_again():
    encoders = _encoders(600)
    for change in ({"backbone": "resnet18"}, {"image_size": 128}, {"pretrain_epochs": 5}, {"w_aligned": 2.0}):
        assert needs_pretraining(encoders, 600, TrainSettings().replace(**change), growth=0.5), change


def test_stage_two_settings_and_the_device_reuse_the_encoders():
    encoders = _encoders(600)
    for change in ({"finetune_steps": 3}, {"shift": True}, {"baseline_steps": 5}, {"device": "cuda"}):
        assert not needs_pretraining(encoders, 600, TrainSettings().replace(**change), growth=0.5), change


def test_encoders_registered_before_settings_were_split_by_stage_are_still_recognised():
    flat = {"backbone": "resnet10t", "image_size": 64, "weights": None, "pretrain_epochs": 40, "finetune_epochs": 10}
    flat |= {"fusion_dim": 128, "baseline_steps": 200, "a_setting_since_removed": 1}
    assert not needs_pretraining(_encoders(600, flat), 600, TrainSettings(), growth=0.5)
    assert needs_pretraining(_encoders(600, flat | {"pretrain_epochs": 20}), 600, TrainSettings(), growth=0.5)


TINY = (
    TrainSettings()
    .replace(backbone="test_resnet", image_size=32, pretrain_epochs=1, pretrain_batch=8, queue_size=16, proj_dim=8)
    .replace(heads=(0,), folds=2, shift_atoms=4, finetune_steps=5)
)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_changing_pretraining_epochs_on_a_retrain_runs_a_new_pretraining(db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=12, labelled=9)
    phases: list[str] = []
    reporter = Reporter(on_step=lambda phase, step, total, losses: phases.append(phase))

    def retrain(train: TrainSettings) -> list[str]:
        phases.clear()
        run_retrain(db, settings, train, reporter)
        return sorted(set(phases))

    assert "pretrain" in retrain(TINY)
    assert "pretrain" not in retrain(TINY.replace(finetune_steps=6))  # stage 2 only: the encoders are reused
    assert "pretrain" in retrain(TINY.replace(pretrain_epochs=2))
    with db.session() as session:
        rows = session.scalars(select(ModelVersion).where(ModelVersion.kind == "encoders")).all()
        assert [TrainSettings.from_dict(v.settings).pretrain.epochs for v in rows] == [1, 2]


def _cache_files(settings) -> dict:
    return {p: p.stat().st_mtime_ns for p in settings.feature_cache_root.rglob("*.npy")}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_prepare_job_encodes_every_case_and_the_next_retrain_only_fine_tunes(db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=12, labelled=9)
    stage2_only = TINY.replace(pretrain_epochs=0)
    phases: list[str] = []
    reporter = Reporter(on_step=lambda phase, step, total, losses: phases.append(phase))
    run_prepare(db, settings, stage2_only, reporter)
    assert set(phases) == {"features"}
    files = _cache_files(settings)
    assert len(files) == 12
    phases.clear()
    run_retrain(db, settings, stage2_only, reporter)
    assert "features" not in phases and "pretrain" not in phases and "finetune" in phases
    assert _cache_files(settings) == files  # read, never encoded again


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_prepare_job_killed_half_way_resumes_where_it_stopped(db, settings, tmp_path):
    """The worker dies after the first chunk of cases (here: the reporter raises); the queue runs
    the job again, which encodes only the cases still missing."""
    make_project(db, settings, tmp_path, cases=40, labelled=9)
    stage2_only = TINY.replace(pretrain_epochs=0)

    def die(phase, step, total, losses):
        raise SystemExit("worker killed")

    with pytest.raises(SystemExit):
        run_prepare(db, settings, stage2_only, Reporter(on_step=die))
    first = _cache_files(settings)
    assert 0 < len(first) < 40
    encoded: list[int] = []
    run_prepare(db, settings, stage2_only, Reporter(on_step=lambda phase, step, total, losses: encoded.append(total)))
    after = _cache_files(settings)
    assert len(after) == 40 and all(after[p] == first[p] for p in first)
    assert set(encoded) == {40 - len(first)}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_prepare_job_with_stage_one_on_registers_encoders_the_retrain_reuses(db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=12, labelled=9)
    phases: list[str] = []
    reporter = Reporter(on_step=lambda phase, step, total, losses: phases.append(phase))
    run_prepare(db, settings, TINY, reporter)
    assert "pretrain" in phases and "features" in phases
    phases.clear()
    run_retrain(db, settings, TINY, reporter)
    assert "pretrain" not in phases and "features" not in phases

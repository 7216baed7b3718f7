"""The model registry: which version is active, rolling back, and the versions table."""

from __future__ import annotations

import math

import pytest

from mics_core.db.models import ModelKind, ModelVersion
from mics_core.registry import RegistryError, activate, active_version, version_table, versions


def _add(db, kind: ModelKind, **columns) -> int:
    with db.session() as session:
        version = ModelVersion(kind=kind, checkpoint_path="-", **columns)
        session.add(version)
        session.flush()
        return version.id


def test_only_a_mics_version_can_be_active_and_listed(db):
    encoders = _add(db, ModelKind.ENCODERS)
    first, second = _add(db, ModelKind.MICS), _add(db, ModelKind.MICS)
    with db.session() as session:
        assert active_version(session) is None
        activate(session, second)
        activate(session, first)  # rolling back deactivates the other
        assert active_version(session).id == first
        assert [v.id for v in versions(session)] == [first, second]
        with pytest.raises(RegistryError, match="that can predict"):
            activate(session, encoders)


def test_version_table_has_one_row_per_version_with_its_metrics(db):
    metrics = {"n": 6, "accuracy": 0.8, "macro_f1": 0.7, "ece": 0.05, "auc": 0.9}
    trained = _add(db, ModelKind.MICS, metrics=metrics, n_labels=12, settings={"backbone": "resnet10t"})
    untested = _add(db, ModelKind.MICS, n_labels=3)
    with db.session() as session:
        activate(session, trained)
        table = version_table(versions(session))
    assert list(table.columns) == [
        "version",
        "active",
        "created",
        "labels",
        "held-out cases",
        "accuracy",
        "macro-F1",
        "AUC",
        "ECE",
        "ECE before scaling",
        "Brier",
        "AURC",
        "head",
        "backbone",
    ]
    first, second = table.to_dict("records")
    assert (first["version"], first["active"], first["labels"], first["backbone"]) == (trained, True, 12, "resnet10t")
    assert (first["accuracy"], first["macro-F1"], first["held-out cases"]) == (0.8, 0.7, 6)
    assert math.isnan(first["Brier"])  # a metric the version lacks
    assert (second["version"], second["active"]) == (untested, False) and math.isnan(second["accuracy"])


def test_version_table_of_no_versions_is_empty_with_its_columns():
    table = version_table([])
    assert table.empty and "accuracy" in table.columns


def test_a_versions_settings_read_back_nested_or_flat_and_none_when_unrecorded(db):
    from mics_core.config import TrainSettings
    from mics_core.registry import trained_with

    nested = TrainSettings().replace(backbone="resnet18", shift=True).to_dict()
    ids = [
        _add(db, ModelKind.MICS, settings=nested),
        _add(db, ModelKind.MICS, settings={"backbone": "efficientnet_b0"}),  # saved before the split by stage
        _add(db, ModelKind.MICS),
    ]
    with db.session() as session:
        rows = versions(session)
        assert [trained_with(v).pretrain.backbone for v in rows[:2]] == ["resnet18", "efficientnet_b0"]
        assert trained_with(rows[0]).finetune.shift is True and trained_with(rows[2]) is None
        assert version_table(rows)["backbone"].tolist()[:2] == ["resnet18", "efficientnet_b0"]
        assert version_table(rows)["backbone"].isna().tolist() == [False, False, True]
    assert [v.id for v in rows] == ids

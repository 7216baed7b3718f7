"""The feature map's data: one version's projected cases with what the scatter colours by."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mics_core.db.models import Prediction
from mics_core.embed import previous_version, project, projection_frame
from tests.conftest import add_model, make_project


def test_projection_frame_has_every_projected_case_of_the_version(db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=6, labelled=2)
    first = add_model(db, [[0.6, 0.3, 0.1]] * 6, [0.2] * 6)
    second = add_model(db, [[0.1, 0.3, 0.6]] * 5, [0.7] * 5)  # the newest case has no prediction
    with db.session() as session:
        session.execute(
            sa.update(Prediction)
            .where(Prediction.case_id == ids[4], Prediction.model_version_id == second)
            .values(umap_x=None, umap_y=None)
        )
        frame = projection_frame(session, second)
        old = projection_frame(session, first)
        assert previous_version(session, second).id == first and previous_version(session, first) is None
    assert list(frame["case_id"]) == ids[:4] and len(old) == 6
    assert list(frame["case_key"]) == ["case00", "case01", "case02", "case03"]
    assert list(frame["label"]) == ["normal", "polyp", "(unlabelled)", "(unlabelled)"]
    assert list(frame["labelled"]) == ["labelled", "labelled", "unlabelled", "unlabelled"]
    assert set(frame["predicted"]) == {"ulcer"} and set(old["predicted"]) == {"normal"}
    assert list(frame["uncertainty"]) == pytest.approx([0.7] * 4)
    assert frame["import batch"].str.startswith("#").all()


def test_too_few_cases_are_not_projected():
    import numpy as np

    assert project(np.zeros((4, 8))) is None

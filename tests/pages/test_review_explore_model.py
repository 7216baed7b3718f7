"""Review (accept / correct with annotations that say the suggestion was shown), Explore
(the feature map and sending a selection on), Model quality, and the Overview."""

from __future__ import annotations

from sqlalchemy import select

from mics_core.db.models import Annotation, ModelVersion
from tests.conftest import add_model, make_project
from tests.pages.conftest import button


def _project(db, settings, tmp_path) -> list[int]:
    ids = make_project(db, settings, tmp_path, cases=6, labelled=0)
    add_model(db, [[0.5, 0.3, 0.2]] * 6, [0.1, 0.9, 0.3, 0.7, 0.2, 0.5])
    return ids


def test_review_ranks_by_uncertainty_and_records_accept_and_correct(open_page, db, settings, tmp_path):
    ids = _project(db, settings, tmp_path)
    app = open_page("pages/review.py", role="reviewer")
    assert not app.exception
    assert app.subheader[0].value == "Case case01"  # uncertainty 0.9 first
    button(app, "Accept normal").click().run()
    assert app.subheader[0].value == "Case case03"
    button(app, "ulcer").click().run()
    with db.session() as session:
        rows = session.execute(
            select(Annotation.case_id, Annotation.source, Annotation.suggestion_shown, Annotation.model_version_id)
        ).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [(ids[1], "review-accept", True), (ids[3], "review-correct", True)]
    assert all(r[3] is not None for r in rows)
    bands = app.dataframe[0].value
    assert list(bands["reviewed"]) == [0, 0, 1, 1] and list(bands["corrected"]) == [0, 0, 1, 0]


def test_review_without_a_model_starts_with_diverse_cases(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=6, labelled=0)
    app = open_page("pages/review.py")
    assert app.selectbox(key="review_strategy").value == "diversity"
    assert app.subheader[0].value.startswith("Case case0")


def test_explore_draws_the_map_and_sends_a_selection_to_review(open_page, db, settings, tmp_path):
    ids = _project(db, settings, tmp_path)
    app = open_page("pages/explore.py")
    assert not app.exception and len(app.get("plotly_chart")) == 1
    app = open_page("pages/review.py")
    app.session_state["review_selection"] = [ids[4], ids[0]]
    app.run()
    assert "selected in Explore" in app.info[0].value
    assert app.subheader[0].value == "Case case04"


def test_explore_and_model_quality_explain_their_empty_state(open_page):
    assert "No feature map yet" in open_page("pages/explore.py").info[0].value
    assert "No model yet" in open_page("pages/model.py").info[0].value


def test_model_quality_shows_metrics_and_its_plots(open_page, db, settings, tmp_path):
    _project(db, settings, tmp_path)
    app = open_page("pages/model.py", role="annotator")
    assert not app.exception
    assert app.dataframe[0].value.iloc[0]["accuracy"] == 0.833
    assert len(app.get("plotly_chart")) == 4  # recall, confusion, reliability, risk-coverage
    assert "Out-of-fold: each of the 6 labelled cases" in app.caption[-1].value


def test_model_quality_names_the_head_the_version_chose_and_why(open_page, db, settings, tmp_path):
    _project(db, settings, tmp_path)
    with db.session() as session:
        version = session.scalars(select(ModelVersion)).one()
        version.metrics = version.metrics | {"head": "linear, 3 fold models", "folds": 3}
        version.metrics |= {"head_log_loss": {"0": 0.61, "256": 0.74}}
    app = open_page("pages/model.py", role="annotator")
    assert app.dataframe[0].value.iloc[0]["head"] == "linear, 3 fold models"
    caption = app.caption[-1].value
    assert "(3 folds)" in caption and "Head: linear, 3 fold models, chosen by out-of-fold log-loss" in caption
    assert "linear: 0.610, 256 hidden: 0.740" in caption


def test_overview_lists_cases_page_by_page(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=55, labelled=3)
    app = open_page("pages/overview.py")
    assert len(app.dataframe[0].value) == 50
    app.number_input[0].set_value(2).run()
    assert list(app.dataframe[0].value["Case"]) == [f"case{i}" for i in range(50, 55)]


def test_overview_of_an_empty_project_offers_the_demo_data(open_page):
    app = open_page("pages/overview.py")
    assert "No cases yet" in app.info[0].value
    assert any(b.label.startswith("Load the demo data") for b in app.button)


def test_an_annotator_cannot_send_a_selection_to_review(open_page, db, settings, tmp_path):
    _project(db, settings, tmp_path)
    app = open_page("pages/explore.py", role="annotator")
    assert not app.exception
    assert not any(b.label == "Send to the Review queue" for b in app.button)


def test_overview_shows_the_background_preparation_after_an_import(open_page, db, settings, tmp_path):
    make_project(db, settings, tmp_path, cases=6, labelled=0)  # the import queued a prepare job
    app = open_page("pages/overview.py")
    assert not app.exception
    texts = [element.proto.text for element in app.get("progress")]
    assert any("Preparing the cases for training in the background" in text for text in texts)

"""Undo takes back only the label this user just gave, and only while it is still current."""

from __future__ import annotations

import itertools

import pytest

from mics_core.labels import LabelError, annotate, current_labels, undo_annotation
from tests.conftest import make_project


def test_undo_restores_the_label_before_the_one_given(db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=2, labelled=1)
    with db.session() as session:
        before = current_labels(session)[ids[0]]
        mine = annotate(session, ids[0], "ulcer", source="manual")
        undo_annotation(session, mine.id)
        assert current_labels(session)[ids[0]] == before


def test_a_label_given_since_by_someone_else_is_never_rolled_back(db, settings, tmp_path):
    ids = make_project(db, settings, tmp_path, cases=2, labelled=0)
    with db.session() as session:
        mine = annotate(session, ids[0], "ulcer", source="manual")
        theirs = annotate(session, ids[0], "polyp", source="manual")
        with pytest.raises(LabelError, match="labelled again since"):
            undo_annotation(session, mine.id)
        assert current_labels(session)[ids[0]] == theirs.label_id


def _label_and_undo(db_url: str, case_ids: list[int], rounds: int, seed: int, start, found) -> None:
    """One labeller in its own process: label a case, then undo that label at once, `rounds`
    times; put (the label's id, the undo row's id) on `found` for each undo that was allowed."""
    import random

    from mics_core.db import connect

    db = connect(db_url)
    rng = random.Random(seed)
    done = []
    start.wait()
    for _ in range(rounds):
        case_id = rng.choice(case_ids)
        with db.session() as session:
            mine = annotate(session, case_id, rng.choice(["normal", "polyp", "ulcer"]), source="manual").id
        try:
            with db.session() as session:
                done.append((mine, undo_annotation(session, mine).id))
        except LabelError:
            pass
    found.put(done)


def test_concurrent_undos_never_roll_back_a_later_label(db, settings, tmp_path):
    """Labellers in separate processes label and undo the same two cases at once: each undo
    that happens directly follows the label it undoes, so nobody's later label is rolled back."""
    import multiprocessing

    import sqlalchemy as sa

    from mics_core.db.models import Annotation

    ids = make_project(db, settings, tmp_path, cases=2, labelled=0)
    context = multiprocessing.get_context("spawn")
    start, found = context.Event(), context.Queue()
    workers = [
        context.Process(target=_label_and_undo, args=(settings.db_url, ids, 60, seed, start, found))
        for seed in range(4)
    ]
    for worker in workers:
        worker.start()
    start.set()
    pairs = [pair for _ in workers for pair in found.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    with db.session() as session:
        rows = session.execute(sa.select(Annotation.id, Annotation.case_id, Annotation.label_id)).all()
    history = {}
    for row_id, case_id, label_id in sorted(rows):
        history.setdefault(case_id, []).append((row_id, label_id))
    before = {}
    for case_rows in history.values():
        for (previous, _), (row_id, _) in itertools.pairwise(case_rows):
            before[row_id] = previous
    assert pairs, "no undo was allowed at all"
    rolled_back = [(target, undo) for target, undo in pairs if before.get(undo) != target]
    assert rolled_back == [], f"{len(rolled_back)} of {len(pairs)} undos rolled back someone else's later label"

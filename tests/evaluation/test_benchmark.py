"""The benchmark: one stratified split per seed, every method, the promised JSON."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mics_core.data import PairRecord
from mics_core.evaluation.benchmark import METHOD_FUNCTIONS, format_table, make_split, summarise
from mics_core.evaluation.demo import generate

ROOT = Path(__file__).resolve().parents[2]


def _records(n_per_class: int, classes: int = 4) -> list[PairRecord]:
    return [PairRecord(f"c{i}", Path("x.png"), None, str(i), label=i % classes) for i in range(n_per_class * classes)]


def test_split_is_stratified_disjoint_and_keeps_test_out_of_training():
    records = _records(50)
    split = make_split(records, ["a", "b", "c", "d"], fraction=0.1, seed=0)
    test, labelled, unlabelled = set(split.test), set(split.labelled), set(split.unlabelled)
    assert not (test & labelled or test & unlabelled or labelled & unlabelled)
    assert len(test | labelled | unlabelled) == 200
    assert np.bincount(split.test_labels).tolist() == [10, 10, 10, 10]
    assert np.bincount([records[i].label for i in split.labelled]).tolist() == [4, 4, 4, 4]
    training = split.training_records()
    assert {r.case_key for r in training} == {records[i].case_key for i in labelled | unlabelled}
    assert sum(r.label >= 0 for r in training) == 16


def test_same_seed_same_test_set_whatever_the_fraction():
    records = _records(30)
    a = make_split(records, list("abcd"), 0.05, seed=3)
    b = make_split(records, list("abcd"), 0.2, seed=3)
    assert np.array_equal(a.test, b.test) and set(a.labelled) < set(b.labelled)


def test_every_class_gets_a_label_even_at_tiny_fractions():
    split = make_split(_records(10), list("abcd"), fraction=0.01, seed=0)
    assert len(split.labelled) == 4


def test_summary_is_mean_and_std_over_seeds():
    rows = [
        {"method": "mics", "seed": s, "accuracy": a, "macro_f1": a, "auc": a, "ece": 0.1, "aurc": 0.2, "seconds": 10.0}
        for s, a in enumerate([0.6, 0.8])
    ]
    summary = summarise(rows)
    assert summary[0]["accuracy"] == 0.7 and round(summary[0]["accuracy_std"], 6) == 0.1
    assert "| mics | 0.700 ± 0.100 |" in format_table(summary)


def test_cli_runs_every_method_and_writes_json(tmp_path):
    manifest = generate(tmp_path / "demo", pairs=40, seed=0, size=64, workers=1)
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mics_core",
            "bench",
            "--data",
            str(manifest),
            "--labeled-fraction",
            "0.25",
            "--seeds",
            "1",
            "--json",
            str(out),
            "--backbone",
            "test_resnet",
            "--image-size",
            "64",
            "--pretrain-epochs",
            "1",
            "--finetune-steps",
            "20",
            "--baseline-steps",
            "10",
            "--methods",
            *METHOD_FUNCTIONS,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MICS_WEIGHTS": "none"},  # the tiny backbone has no packaged weights
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == list(METHOD_FUNCTIONS)
    for row in rows:
        assert set(row) == {"method", "accuracy", "macro_f1", "auc", "ece", "aurc", "seconds"}
        assert 0 <= row["accuracy"] <= 1 and row["seconds"] > 0
    assert "| method | accuracy |" in result.stdout


def test_every_bench_script_imports():
    # the scripts under bench/ run only by hand; importing them catches a renamed library door
    for script in sorted((ROOT / "bench").glob("*.py")):
        importlib.import_module(f"bench.{script.stem}")

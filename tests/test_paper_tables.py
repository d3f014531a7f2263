"""benchmarks/paper_tables.py: processes sharing one --out merge their results."""

import json

import pytest

from benchmark_utils import load_benchmark


@pytest.fixture()
def tables():
    return load_benchmark("paper_tables")


def record(variant: str, task: str, top1: float) -> dict:
    return {"variant": variant, "seed": 0, "step": 10, "task": task, "probe": "attentive",
            "label_fraction": 1.0, "top1": top1}


def test_save_results_merges_processes_sharing_out(tables, tmp_path):
    args = tables.parse_args(["--out", str(tmp_path), "--variants", "jepa"])
    first = [record("jepa", "motion", 60.0)]
    tables.RUNS["jepa_s0"] = {"variant": "jepa", "train_seconds": 5.0}
    tables.save_results(args, first)
    # a second process (its own RUNS) with other variants, and a newer result for the shared record
    tables.RUNS.clear()
    tables.RUNS["pixel_s0"] = {"variant": "pixel", "train_seconds": 7.0}
    second = [record("pixel", "motion", 40.0)]
    args2 = tables.parse_args(["--out", str(tmp_path), "--variants", "pixel"])
    tables.save_results(args2, second)
    # the first process finishes probing: its newer record of its own run must survive the second's save
    tables.RUNS["jepa_s0"] = {"variant": "jepa", "train_seconds": 5.0, "probe_seconds": 9.0}
    tables.RUNS["pixel_s0"] = {"variant": "pixel", "train_seconds": 7.0}
    tables.save_results(args, [])
    tables.RUNS["jepa_s0"] = {"variant": "jepa", "train_seconds": 5.0}  # the second process's stale copy
    tables.save_results(args2, [])
    assert json.loads((tmp_path / "results.json").read_text())["runs"]["jepa_s0"]["probe_seconds"] == 9.0
    payload = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["variant"] for r in payload["probes"]) == ["jepa", "pixel"]
    assert set(payload["runs"]) == {"jepa_s0", "pixel_s0"}
    assert sorted(r["variant"] for r in second) == ["jepa", "pixel"]  # the caller sees both
    # a process's own record wins over the file's copy of the same probe
    tables.save_results(args2, [record("pixel", "motion", 41.0)])
    pixel = [r for r in json.loads((tmp_path / "results.json").read_text())["probes"] if r["variant"] == "pixel"]
    assert [r["top1"] for r in pixel] == [41.0]
    assert not list(tmp_path.glob("*.tmp*"))


def test_scores_average_seeds_and_the_report_says_which(tables):
    results = [record("jepa", "motion", 60.0), {**record("jepa", "motion", 70.0), "seed": 1},
               record("pixel", "motion", 40.0)]
    assert tables.score(results, "jepa", "motion") == "65.0 ± 7.1"  # sample std over seeds
    assert tables.score(results, "pixel", "motion") == "40.0"
    assert tables.score(results, "tube", "motion") == "-"
    assert tables.seeds_per_variant(results) == "jepa 0, 1; pixel 0"

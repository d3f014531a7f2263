"""experiments/paper_tables.py: processes sharing one --out merge their results."""

import json

import pytest

from benchmark_utils import load_experiment


@pytest.fixture()
def tables():
    return load_experiment("paper_tables")


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


def test_motion_types_table_groups_classes_and_reads_directions(tables):
    import numpy as np
    import torch

    from vjepa.eval import per_class_top1

    def with_confusion(seed, rotation_right):
        confusion = np.eye(8, dtype=int) * 10  # 10 test clips per class, all right ...
        confusion[4, 4], confusion[4, 5] = rotation_right, 10 - rotation_right  # ... but cw -> ccw
        rec = {**record("jepa", "motion", 0.0), "seed": seed, "confusion": confusion.tolist()}
        rec["per_class_top1"] = per_class_top1(torch.tensor(confusion))
        rec["top1"] = 100.0 * np.trace(confusion) / confusion.sum()
        return rec

    results = [with_confusion(0, 10), with_confusion(1, 0), record("pixel", "motion", 40.0)]
    header, _, row = tables.motion_types_table(results, ["jepa", "pixel"])
    cells = [c.strip() for c in row.strip("|").split("|")]
    # seed 0 all right; seed 1 puts every cw clip in ccw: rotations 50, rotation direction 50
    assert cells[1:] == ["93.8 ± 8.8", "100.0 ± 0.0", "75.0 ± 35.4", "100.0 ± 0.0", "75.0 ± 35.4", "100.0 ± 0.0"]
    assert "grow vs shrink" in header
    assert tables.motion_types_table([record("pixel", "motion", 40.0)], ["pixel"]) == []  # no confusion: no table


def test_quick_run_writes_every_table_and_resumes(tables, tmp_path, capsys):
    args = ["--quick", "--variants", "jepa", "random", "--out", str(tmp_path), "--threads", "1"]
    assert tables.main(args) == 0
    report = (tmp_path / "paper_tables.md").read_text()
    for heading in ("Feature vs pixel", "Masking strategy", "Attentive probe vs average pooling",
                    "5% vs 100% of the labels", "Motion by class kind", "Run times"):
        assert f"## {heading}" in report, heading
    probes = json.loads((tmp_path / "results.json").read_text())["probes"]
    final = [p for p in probes if p["variant"] == "jepa" and p["task"] == "motion" and p["probe"] == "attentive"
             and p["label_fraction"] == 1.0]
    assert final and all(len(p["confusion"]) == 8 for p in final)
    assert (tmp_path / "runs" / "jepa_s0" / "latest.pt").is_file()
    capsys.readouterr()
    assert tables.main(args) == 0  # finished runs and probes are read back, not redone
    assert "pretraining jepa_s0" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "results.json").read_text())["probes"]) == len(probes)

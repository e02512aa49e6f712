"""suite.json accumulates every invocation (workers split by seed must not erase each other), and the
report's commit/date line comes from the cells it aggregates. Synthetic directories; no training."""

import json
import multiprocessing as mp

import pytest

from experiments.manifest import cell_commits, failed_cells, new_invocation, provenance, update_manifest

BUDGET = {"name": "joint", "target": "joint-selfflow"}


def test_two_workers_invocations_are_both_kept_and_cells_are_their_union(tmp_path):
    a = new_invocation("aaa1111", ["image/fm/seed0", "image/fm/seed1"])
    b = {**new_invocation("bbb2222", ["image/fm/seed1", "video/fm/seed0"]), "id": "worker-b"}
    update_manifest(tmp_path, BUDGET, a["cells"], a)
    update_manifest(tmp_path, BUDGET, b["cells"], b)
    a.update(finished="2026-12-02T04:00:00", failed=[])
    m = update_manifest(tmp_path, BUDGET, a["cells"], a)  # the same id again: replaced, not appended
    assert m == json.loads((tmp_path / "suite.json").read_text())
    assert m["cells"] == ["image/fm/seed0", "image/fm/seed1", "video/fm/seed0"]
    assert [r["id"] for r in m["invocations"]] == ["worker-b", a["id"]]
    assert m["invocations"][1]["finished"] == "2026-12-02T04:00:00"
    assert m["commits"] == ["aaa1111", "bbb2222"]


def _append(args):
    suite_dir, i = args
    update_manifest(suite_dir, BUDGET, [f"image/fm/seed{i}"], {"id": f"w{i}", "commit": "c"})


def test_concurrent_writers_lose_no_invocation(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_append, [(tmp_path, i) for i in range(12)])
    m = json.loads((tmp_path / "suite.json").read_text())
    assert sorted(r["id"] for r in m["invocations"]) == sorted(f"w{i}" for i in range(12))
    assert sorted(m["cells"]) == sorted(f"image/fm/seed{i}" for i in range(12))


def test_a_directory_of_another_budget_is_refused_and_left_intact(tmp_path):
    update_manifest(tmp_path, {"name": "standard"}, ["image/fm/seed0"], {"id": "x", "commit": "c"})
    before = (tmp_path / "suite.json").read_text()
    with pytest.raises(ValueError, match=r"belongs to budget 'standard', not 'joint'.*own --out"):
        update_manifest(tmp_path, BUDGET, ["joint/fm/seed0"], {"id": "y", "commit": "c"})
    assert (tmp_path / "suite.json").read_text() == before


def test_a_corrupt_manifest_is_named_and_not_overwritten(tmp_path):
    (tmp_path / "suite.json").write_text('{"budget": ')
    with pytest.raises(ValueError, match=r"suite.json is not valid JSON.*not overwritten"):
        update_manifest(tmp_path, BUDGET, [], {"id": "y", "commit": "c"})
    assert (tmp_path / "suite.json").read_text() == '{"budget": '


def test_a_manifest_from_before_invocations_becomes_the_first_entry(tmp_path):
    old = {"budget": BUDGET, "commit": "cfa2100", "started": "2026-12-02T00:08:00", "cells": ["joint/fm/seed0"]}
    (tmp_path / "suite.json").write_text(json.dumps(old))
    m = update_manifest(tmp_path, BUDGET, ["image/fm/seed0"], {"id": "new", "commit": "d216821"})
    assert [(r["id"], r["commit"]) for r in m["invocations"]] == [("legacy", "cfa2100"), ("new", "d216821")]
    assert m["cells"] == ["joint/fm/seed0", "image/fm/seed0"] and m["commits"] == ["cfa2100", "d216821"]


def test_a_cell_resumed_on_newer_code_keeps_both_commits():
    assert cell_commits({}, "a") == ["a"]
    assert cell_commits({"commits": ["a"]}, "b") == ["a", "b"]
    assert cell_commits({"commits": ["a", "b"]}, "b") == ["a", "b"]
    assert cell_commits({"commit": "a"}, None) == ["a"]  # a record with one commit only


def _cell(root, key, **record):
    d = root / key
    d.mkdir(parents=True)
    (d / "suite_cell.json").write_text(json.dumps(record))
    return d


def test_provenance_counts_commits_and_spans_the_cells_dates(tmp_path):
    dirs = [_cell(tmp_path, "image/fm/seed0", commits=["aaa"], first_started="2026-12-02T01:00:00",
                  started="2026-12-02T01:30:00", finished="2026-12-02T02:00:00"),
            _cell(tmp_path, "image/fm/seed1", commits=["aaa"], started="2026-12-02T00:30:00",
                  finished="2026-12-02T03:00:00"),
            _cell(tmp_path, "image/fm/seed2", commits=["aaa", "bbb"], started="2026-12-02T00:40:00",
                  finished="2026-12-02T01:00:00"),
            _cell(tmp_path, "image/fm/seed3")]  # a record from before commits were kept
    p = provenance(dirs)
    assert p == {"cells": 4, "commits": {"aaa": 2, "aaa+bbb": 1, "not recorded": 1},
                 "first_start": "2026-12-02T00:30:00", "last_finish": "2026-12-02T03:00:00"}
    # a resumed cell counts from its first attempt, not from the resume
    assert provenance(dirs[:1])["first_start"] == "2026-12-02T01:00:00"


def test_report_header_names_commits_dates_and_failed_cells(tmp_path):
    from experiments.report import default_target, write_report

    from test_suite_aggregate import write_run  # same directory: on sys.path under pytest

    for seed, commits in [(0, ["aaa"]), (1, ["aaa", "bbb"])]:
        d = write_run(tmp_path, "image", "fm", seed, {"fid": 10.0 + seed})
        rec = json.loads((d / "suite_cell.json").read_text())
        rec.update(commits=commits, started=f"2026-12-02T0{seed}:00:00", finished=f"2026-12-02T0{seed}:30:00")
        (d / "suite_cell.json").write_text(json.dumps(rec))
    _cell(tmp_path, "image/selfflow/seed0", status="failed", error="boom")
    update_manifest(tmp_path, BUDGET, [], {"id": "w", "commit": "aaa"})
    header = write_report(tmp_path, target="selfflow").read_text().split("Statistics")[0]
    assert "Budget `joint`: 2 finished run directories from 1 invocation(s)" in header
    assert "Code: `aaa` (1 cell), `aaa+bbb` (1 cell)." in header
    assert "from 2026-12-02T00:00:00 to 2026-12-02T01:30:00" in header
    assert "**Failed cells** (see their suite_cell.json): image/selfflow/seed0" in header
    assert failed_cells(tmp_path) == ["image/selfflow/seed0"]
    assert default_target(tmp_path) == "joint-selfflow"
    assert default_target(tmp_path / "image") == "selfflow"  # no suite.json there

"""`bench matrix` runs once on a tiny size: it works and its figures are made of what the
runs it started wrote. Nothing here is about speed (`bench vm`: tests/test_knfsd.py)."""

from __future__ import annotations

import json

import pytest
from nfsconf_cli import nfsconf

from nfsconf.report.results import load_run


def test_bench_matrix_measures_both_runs_and_their_phases(tmp_path):
    out = tmp_path / "matrix.json"
    r = nfsconf("bench", "matrix", "--profile", "bindfs", "--profile", "bindfs-noforget",
                "-k", "DEC-WARM", "--jobs", "2", "--dir", str(tmp_path / "runs"),
                "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    anchor = load_run(tmp_path / "runs" / "jobs-1").results
    parallel = load_run(tmp_path / "runs" / "jobs-2").results
    assert anchor and len(anchor) == len(parallel)
    runs = result["runs"]
    assert runs["1"]["cells"] == len(anchor) and runs["2"]["cells"] == len(parallel)
    assert result["ratio_to_anchor"] == pytest.approx(
        runs["2"]["cells_per_second"] / runs["1"]["cells_per_second"], rel=0.01)
    # the breakdown is the anchor's cells, phase by phase, from their evidence
    breakdown = result["breakdown"]
    assert set(breakdown) == {"bindfs", "bindfs-noforget"}
    assert sum(b["cells"] for b in breakdown.values()) == len(anchor)
    mounted = sum(r.evidence["timings"]["mount"] for r in anchor if r.profile == "bindfs")
    assert breakdown["bindfs"]["mount"] == pytest.approx(mounted)
    assert breakdown["bindfs"]["mount"] > 0
    expected = sorted((a.row, a.profile, a.verdict, b.verdict) for a in anchor for b in parallel
                      if (a.row, a.profile) == (b.row, b.profile) and a.verdict != b.verdict)
    assert sorted(map(tuple, result["verdicts_differing"])) == expected
    assert "ratio to --jobs 1" in r.stdout and "where the time of --jobs 1 goes" in r.stdout


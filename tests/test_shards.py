"""Split and merge, for real: two shards of a matrix, merged, are the unsharded run."""

import json
import os
import subprocess
import sys

import pytest

from nfsconf.errors import UsageError
from nfsconf.report.results import load_runs
from nfsconf.shard import parse, part_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")
PROFILES = ("bindfs", "bindfs-noforget", "ref-stable")


def _run(out, *extra):
    argv = [sys.executable, "-m", "nfsconf.cli", "run", "--out", str(out), "--fuzz-budget", "40"]
    for p in PROFILES:
        argv += ["--profile", p]
    r = subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _cells(run):
    return {(r.row, r.profile, r.transport): r.verdict for r in run.results}


def test_two_shards_merged_are_the_whole_run(tmp_path):
    whole, one, two = tmp_path / "whole", tmp_path / "shards" / "1", tmp_path / "shards" / "2"
    _run(whole)
    _run(one, "--shard", "1/2")
    _run(two, "--shard", "2/2")
    a, b = load_runs([one]), load_runs([two])
    assert a.results and b.results, "each shard got part of the matrix"
    assert not set(_cells(a)) & set(_cells(b)), "shards overlap"
    merged = load_runs([tmp_path / "shards"])  # a directory of run directories
    assert _cells(merged) == _cells(load_runs([whole]))
    # the same pairs on every machine: the shard of a cell is a function of its names
    for r in a.results:
        assert part_of(r.profile, r.id, 2) == 1
    env = json.loads((one / "results.jsonl").read_text().splitlines()[0])
    assert env["run"]["shard"] == "1/2"
    # the report of the merged shards is one report
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "report", str(one), str(two),
                        "--out", str(tmp_path / "view"), "--format", "terminal"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "view" / "matrix.txt").read_text().count("\n") > len(PROFILES)


def test_shard_spec_is_checked():
    assert parse("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(UsageError):
            parse(bad)
    # every pair belongs to exactly one part
    parts = {part_of("p", f"S{i}", 3) for i in range(200)}
    assert parts == {1, 2, 3}

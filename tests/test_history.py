"""A results tree per kernel build, for real: three short runs made here, listed by
`nfsconf history`, the newest compared with the one before it of the same profiles by
`nfsconf diff --last`, and merges that must be refused refused."""

import json
import os

import pytest
from nfsconf_cli import nfsconf

from nfsconf.errors import ResultsError
from nfsconf.report.results import load_runs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """runs/1 bindfs, runs/2 bindfs-noforget, runs/3 bindfs again: one scenario each."""
    top = tmp_path_factory.mktemp("history") / "runs"
    for n, profile in ((1, "bindfs"), (2, "bindfs-noforget"), (3, "bindfs")):
        r = nfsconf("run", "--profile", profile, "-k", "DEC-COLD", "--out", str(top / str(n)))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return top


def test_history_lists_every_run_oldest_first(tree):
    r = nfsconf("history", str(tree))
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if str(tree) in x]
    assert [x.split()[-1] for x in lines] == [str(tree / n) for n in ("1", "2", "3")]
    kernel = json.loads((tree / "1" / "results.jsonl").read_text().splitlines()[0])["kernel"]
    assert all(kernel in x for x in lines)


def test_diff_last_compares_the_newest_with_the_last_of_its_profiles(tree):
    r = nfsconf("diff", str(tree), "--last")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"BASE {tree / '1'} ("), r.stdout  # not 2: other profiles
    assert f"NEW {tree / '3'} (" in r.stdout.splitlines()[0]
    r = nfsconf("diff", str(tree / "2"), "--last")  # a single run has nothing before it
    assert r.returncode == 2 and "no earlier run" in r.stderr, r.stderr


def test_merges_that_would_mislead_are_refused(tree, tmp_path):
    with pytest.raises(ResultsError, match="both hold DEC-COLD"):
        load_runs([tree / "1", tree / "3"])  # the same cells twice
    # a run of another nfsconf version: refused, unless asked for
    other = tmp_path / "other"
    other.mkdir()
    lines = (tree / "2" / "results.jsonl").read_text().splitlines()
    env = json.loads(lines[0])
    env["nfsconf"] = env["nfsconf"] + "+other"
    (other / "results.jsonl").write_text("\n".join([json.dumps(env), *lines[1:]]) + "\n")
    with pytest.raises(ResultsError, match="disagree about the nfsconf version"):
        load_runs([tree / "1", other])
    merged = load_runs([tree / "1", other], allow_mixed=True)
    assert {r.profile for r in merged.results} == {"bindfs", "bindfs-noforget"}
    r = nfsconf("report", str(tree / "1"), str(other), "--out", str(tmp_path / "v"))
    assert r.returncode == 2 and "--allow-mixed" in r.stderr, r.stderr

"""`nfsconf run` end to end, as a user runs it: real servers, results.jsonl, the matrix."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nfsconf.mounttable import mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")
CRASH = Path(__file__).parent / "data" / "crash_scenarios.py"


def _run(*args, out, timeout=300):
    """nfsconf run with its labs under OUT, so only this run's mounts are looked at."""
    labs = out / "labs"
    labs.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TMPDIR": str(labs)})


def _records(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return records[0], records[1:]


def _mounts_under(path):
    return [m for m in mounts() if m.is_fuse and m.mountpoint.startswith(str(path))]


def test_run_bindfs_pair_shows_design_truths(tmp_path):
    r = _run("--profile", "bindfs", "--profile", "bindfs-noforget", "-k", "DEC or UNLINK",
             out=tmp_path)
    assert r.returncode == 0, r.stderr
    env, results = _records(tmp_path)
    assert env["kind"] == "env" and env["fuse"]["major"] == 7
    assert set(env["profiles"]) == {"bindfs", "bindfs-noforget"}
    cell = {(x["id"], x["variant"], x["profile"]): x for x in results}
    assert cell[("DEC-COLD", "file", "bindfs")]["verdict"] == "FAIL"
    assert cell[("DEC-COLD", "file", "bindfs")]["errno"] == "ESTALE"
    assert cell[("DEC-COLD", "file", "bindfs-noforget")]["verdict"] == "PASS"
    assert cell[("DEC-COLD-SAFE", "file", "bindfs")]["verdict"] == "PASS"
    noforget = cell[("DEC-COLD", "file", "bindfs-noforget")]["evidence"]["decodes"]["cold"]
    assert noforget["outcome"] == "same" and noforget["got"]["marker"].startswith("nfsconf ")
    assert cell[("DEC-COLD", "file", "bindfs")]["handle"]["fields"]["kind"] == "FILEID_INO64_GEN"
    assert not any(x["verdict"] == "PASS" and x["wrong_object"] for x in results)
    assert "DEC-COLD/file" in r.stdout and "bindfs-noforget" in r.stdout  # the matrix
    assert (tmp_path / "matrix.txt").exists()
    assert _mounts_under(tmp_path) == []
    assert list((tmp_path / "labs").iterdir()) == []  # every lab removed its files


def test_a_restart_meets_a_clock_seeded_generation_in_its_second(tmp_path):
    """mergerfs gives every node the generation of the second it started in: RESTART makes
    its restart land within that second, so old handles open other objects every run (the
    restart that crossed a second is done again), not only in runs that happened to."""
    r = _run("--profile", "mergerfs", "-k", "RESTART and not LIVE and not LH", out=tmp_path)
    assert r.returncode == 0, r.stderr
    _, results = _records(tmp_path)
    cells = [x for x in results if x["id"] in ("RESTART", "RESTART-SAFE")]
    assert len(cells) == 4
    for cell in cells:
        assert cell["verdict"] == "FAIL" and cell["wrong_object"], cell
        # evidence, not the verdict: the instances' start-to-mount spans are compared, so
        # a restart may meet the old generation yet not be shown within one second
        assert cell["evidence"]["restart_within_the_same_second"], cell
    assert _mounts_under(tmp_path) == []


def test_server_killed_or_stopped_mid_scenario_run_goes_on(tmp_path):
    r = _run("--profile", "bindfs", "--scenarios", str(CRASH), "--timeout", "3", out=tmp_path)
    assert r.returncode == 0, r.stderr
    _, results = _records(tmp_path)
    by_id = {x["id"]: x for x in results}
    crashed = by_id["CRASH-KILL"]
    assert crashed["verdict"] in ("FAIL", "ERROR")
    assert crashed["errno"] == "ENOTCONN" and "ENOTCONN" in crashed["reason"]
    stopped = by_id["CRASH-STOP"]
    assert stopped["verdict"] == "ERROR" and "time limit 3 s exceeded" in stopped["reason"]
    assert "aborted fuse connection" in stopped["reason"]
    assert stopped["duration"] < 30
    assert by_id["AFTER-CRASH"]["verdict"] == "PASS"
    kernel = by_id["KERNEL-LOG"]
    assert kernel["verdict"] == "FAIL" and kernel["reason"].startswith("kernel: nfsconf self-test")
    assert _mounts_under(tmp_path) == []
    assert list((tmp_path / "labs").iterdir()) == []  # every lab removed its files


def test_reference_server_exception_makes_the_cell_error(tmp_path):
    r = _run("--profile", "ref-stable", "--scenarios", str(CRASH), "-k", "SERVER-BUG",
             out=tmp_path)
    assert r.returncode == 0, r.stderr
    _, results = _records(tmp_path)
    (cell,) = results
    assert "decodes" in cell["evidence"], (cell["verdict"], cell["reason"])
    # the decode ended in an error the scenario accepts: only the trace tells the truth
    assert cell["evidence"]["decodes"]["cold"]["error"] in ("ESTALE", "EIO")
    assert cell["verdict"] == "ERROR", cell
    assert cell["reason"].startswith("reference server raised: LOOKUP: RuntimeError: injected")
    assert "(ops.py:" in cell["reason"] and "in lookup_dot)" in cell["reason"]  # where it raised
    assert _mounts_under(tmp_path) == []


def test_a_server_without_export_support_fails_as_not_exportable(tmp_path):
    """The kernel's EOPNOTSUPP from name_to_handle_at is the system's answer (FAIL, errno
    recorded), told apart from the suite's own errors by the exception's errno."""
    r = _run("--profile", "ref-noexport", "-k", "ENC-TYPE", out=tmp_path)
    assert r.returncode == 0, r.stderr
    _, results = _records(tmp_path)
    assert {x["variant"] for x in results} == {"file", "dir"}
    for x in results:
        assert x["verdict"] == "FAIL" and x["reason"].startswith("not exportable"), x["reason"]
        assert getattr(errno, x["errno"]) == errno.EOPNOTSUPP  # named ENOTSUP, its alias
    assert _mounts_under(tmp_path) == []


def test_no_matching_scenario_is_an_error(tmp_path):
    r = _run("--profile", "bindfs", "-k", "NO_SUCH_SCENARIO", out=tmp_path)
    assert r.returncode == 2 and "no scenario matched" in r.stderr


@pytest.mark.ganesha
@pytest.mark.skipif(shutil.which("ganesha.nfsd") is None, reason="nfs-ganesha not installed")
def test_ganesha_transport_matrix(tmp_path):
    """The same scenarios through NFS-Ganesha on 127.0.0.1 and the raw NFSv3 client."""
    r = _run("--transport", "ganesha", "--profile", "bindfs", "--profile", "bindfs-noforget",
             "-k", "DEC-COLD or UNLINK", out=tmp_path)
    assert r.returncode == 0, r.stderr
    _, results = _records(tmp_path)
    cell = {(x["id"], x["variant"], x["profile"]): x for x in results}
    assert {x["transport"] for x in results} == {"ganesha"}
    plain = cell[("DEC-COLD", "file", "bindfs")]
    assert plain["verdict"] == "FAIL" and plain["errno"] == "NFS3ERR_STALE"
    assert cell[("DEC-COLD", "file", "bindfs-noforget")]["verdict"] == "PASS"
    assert cell[("DEC-COLD", "dir", "bindfs-noforget")]["verdict"] == "PASS"
    assert cell[("UNLINK", "file-cold", "bindfs")]["verdict"] == "PASS"
    got = cell[("DEC-COLD", "file", "bindfs-noforget")]["evidence"]["decodes"]["cold"]["got"]
    assert got["marker"].startswith("nfsconf ")  # read back over NFS
    assert _mounts_under(tmp_path) == []


def test_a_declared_need_unmet_skips_at_collection_and_mounts_nothing(tmp_path):
    """A cell whose declared needs its profile or transport cannot meet is judged SKIP from
    the declaration alone: the reason its first unmet need gives, and no lab; the same
    scenario on a profile that meets them runs."""
    r = _run("--profile", "bindfs", "--profile", "ref-stable", "-k",
             "LIVE-RESTART-SAFE or LISTING-NFS", out=tmp_path)
    assert r.returncode == 0, r.stderr
    _, results = _records(tmp_path)
    assert {x["id"] for x in results} == {"LIVE-RESTART-SAFE", "LISTING-NFS"}
    for x in results:
        ran = x["id"] == "LIVE-RESTART-SAFE" and x["profile"] == "ref-stable"
        if ran:  # restarted in place, two pids in its evidence
            assert x["verdict"] == "PASS" and len(x["evidence"]["server_pids"]) == 2, x
            continue
        want = ("NFS wire check" if x["id"] == "LISTING-NFS"
                else "no restart without unmount: profile bindfs")
        assert x["verdict"] == "SKIP" and x["reason"].startswith(want), x
        assert "server_pid" not in x["evidence"] and "timings" not in x["evidence"], x
    assert not _mounts_under(tmp_path)

"""`nfsconf run` end to end, as a user runs it: real servers, results.jsonl, the matrix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfsconf.servers.mount import mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")
CRASH = Path(__file__).parent / "data" / "crash_scenarios.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", *args],
                          capture_output=True, text=True, timeout=timeout)


def _records(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return records[0], records[1:]


def _nfsconf_mounts():
    return [m for m in mounts() if m.fstype.startswith("fuse") and "nfsconf" in m.mountpoint]


def test_run_bindfs_pair_shows_design_truths(tmp_path):
    before = _nfsconf_mounts()
    r = _run("--profile", "bindfs", "--profile", "bindfs-noforget", "-k", "DEC or UNLINK",
             "--out", str(tmp_path))
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
    assert _nfsconf_mounts() == before


def test_server_killed_or_stopped_mid_scenario_run_goes_on(tmp_path):
    before = _nfsconf_mounts()
    r = _run("--profile", "bindfs", "--scenarios", str(CRASH), "--out", str(tmp_path),
             "--timeout", "3")
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
    assert _nfsconf_mounts() == before


def test_no_matching_scenario_is_an_error(tmp_path):
    r = _run("--profile", "bindfs", "-k", "NO_SUCH_SCENARIO", "--out", str(tmp_path))
    assert r.returncode == 2 and "no scenario matched" in r.stderr

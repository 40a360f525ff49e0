"""pynfs as a second oracle, for real: the vendored upstream tree built from nothing into a
fresh cache, run as itself against NFS-Ganesha exporting bindfs and bindfs-noforget, its
codes recorded as cells beside the cold replays of the same operations."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest
from nfsconf_cli import AS_ROOT, SHARED, needs, nfsconf

from nfsconf import pynfs

PYNFS = SHARED / "vendor" / "pynfs"
pytestmark = [pytest.mark.ganesha, AS_ROOT, needs("ganesha.nfsd", "nfs-ganesha")]


@pytest.fixture(scope="module")
def pynfs_run(tmp_path_factory):
    assert (PYNFS / "nfs4.1").is_dir(), f"{PYNFS} is missing: CI clones beside ../shared"
    tmp = tmp_path_factory.mktemp("pynfs")
    out, cache = tmp / "run", tmp / "cache"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))  # built from nothing
    r = nfsconf("run", "--transport", "ganesha", "--profile", "bindfs", "--profile",
                "bindfs-noforget", "-k", "PYNFS or V4-COLD-PUTFH or NFS-LOOKUPP",
                "--pynfs", str(PYNFS), "--out", str(out), timeout=900, env=env)
    # bindfs fails the cold replays (its handles die with the cache): exit 1, not 2
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()[1:]]
    return out, cache, r.stdout, records


def test_pynfs_is_built_into_the_cache_once(pynfs_run):
    _, cache, _, _ = pynfs_run
    built = list((cache / "nfsconf" / "pynfs").glob("*/.nfsconf-built"))
    assert len(built) == 1, built
    assert (built[0].parent / "nfs4.1" / "xdrdef").is_dir(), "its XDR code was generated"


def test_each_code_pynfs_reported_is_a_cell(pynfs_run):
    out, _, _, records = pynfs_run
    for profile in ("bindfs", "bindfs-noforget"):
        for version in pynfs.VERSIONS:
            log = (out / "pynfs" / f"{profile}-ganesha" / f"pynfs-{version}.log").read_text()
            asked = int(re.search(r"Command line asked for (\d+) of", log)[1])
            statuses = dict(re.findall(r"^(\S+)\s+\S+\s+: (PASS|WARNING|FAILURE|OMIT|"
                                       r"UNSUPPORTED)\s*$", log, re.M))
            cells = {r["id"].removeprefix("PYNFS-"): r for r in records
                     if r["profile"] == profile and r["id"].startswith("PYNFS-")
                     and r["variant"] == version}
            assert len(cells) == asked == len(statuses) > 0
            for code, r in cells.items():
                assert r["verdict"] == pynfs.VERDICT[statuses[code]], code
                assert r["reason"].startswith(f"pynfs {statuses[code]}")
            # the file-handle flags were the ones asked for
            assert {"PUTFH1r", "PUTFH2"} <= set(cells), sorted(cells)
        own = [r for r in records if r["profile"] == profile and r["id"] == "PYNFS"]
        assert sorted(r["verdict"] for r in own) == ["PASS", "PASS"], "pynfs ran, both suites"


def test_pynfs_passes_what_the_cold_replay_fails(pynfs_run):
    out, _, stdout, records = pynfs_run
    cell = {(r["profile"], r["id"], r["variant"]): r for r in records}
    # warm, pynfs passes PUTFH on both; cold, bindfs's handle is stale, bindfs-noforget's not
    for profile in ("bindfs", "bindfs-noforget"):
        assert cell[(profile, "PYNFS-PUTFH1r", "4.1")]["verdict"] == "PASS"
    assert cell[("bindfs", "V4-COLD-PUTFH", "file")]["verdict"] == "FAIL"
    assert cell[("bindfs", "V4-COLD-PUTFH", "file")]["errno"] == "NFS4ERR_STALE"
    assert cell[("bindfs-noforget", "V4-COLD-PUTFH", "file")]["verdict"] == "PASS"
    line = ("bindfs: PUTFH of a file: pynfs PUTFH1r/4.1 PASS, cold V4-COLD-PUTFH/file FAIL "
            "NFS4ERR_STALE")
    assert line in stdout and line in (out / "matrix.txt").read_text()
    assert "## pynfs beside the cold replays" in (out / "report.md").read_text()
    assert "pynfs beside the cold replays" in (out / "report.html").read_text()


def test_junit_has_the_pynfs_cells(pynfs_run):
    out, _, _, records = pynfs_run
    cases = {c.get("name") for c in ET.parse(out / "junit.xml").iter("testcase")}
    pyn = [r for r in records if r["id"].startswith("PYNFS-")]
    assert {f"{r['id']}/{r['variant']} [SHOULD]" for r in pyn} <= cases


def test_bad_pynfs_arguments_are_clear_errors(tmp_path):
    r = nfsconf("run", "--transport", "ganesha", "--pynfs", str(tmp_path), "--out",
                str(tmp_path / "o"), timeout=120)
    assert r.returncode == 2 and "not a pynfs checkout" in r.stderr, r.stderr
    r = nfsconf("run", "--transport", "local", "--pynfs", str(PYNFS), "--out",
                str(tmp_path / "o"), timeout=120)
    assert r.returncode == 2 and "needs an NFS transport" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_parse_takes_what_the_report_shows():
    report = "\n".join([
        "*" * 50,
        "PUTFH1r  st_putfh.testFile                     : PASS",
        "LOOK7    st_lookup.testInvalidUtf8             : FAILURE",
        "           LOOKUP object with invalid utf-8 name should",
        "           return NFS4ERR_INVAL",
        "LOOKP1   st_lookupp.testDir                    : OMIT",
        "           Dependency MKDIR st_create.testDir had status",
        "           FAILURE.",
        "GF1      st_getfh.testGetfh                    : WARNING",
        "*" * 50,
        "Command line asked for 4 of 9 tests",
    ])
    data = {"testcase": [
        {"code": "PUTFH1r", "name": "testFile"},
        {"code": "LOOK7", "name": "testInvalidUtf8",
         "failure": {"message": "LOOKUP object with invalid utf-8 name '\\xc0' should "
                                "return NFS4ERR_INVAL, instead got NFS4ERR_NOENT"}},
        {"code": "LOOKP1", "name": "testDir", "skipped": 1},
        {"code": "GF1", "name": "testGetfh"},
        {"code": "NOTASKED", "name": "testOther", "skipped": 1},
    ]}
    codes = {c.code: c for c in pynfs.parse("4.0", json.dumps(data), report)}
    assert set(codes) == {"PUTFH1r", "LOOK7", "LOOKP1", "GF1"}
    assert [codes[c].verdict for c in ("PUTFH1r", "LOOK7", "LOOKP1", "GF1")] == \
        ["PASS", "FAIL", "SKIP", "PASS"]
    assert codes["LOOK7"].message.endswith("instead got NFS4ERR_NOENT")  # the JSON's, whole
    assert codes["LOOKP1"].message == ("Dependency MKDIR st_create.testDir had status "
                                       "FAILURE.")
    assert codes["GF1"].status == "WARNING"

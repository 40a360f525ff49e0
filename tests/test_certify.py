"""`nfsconf certify` against real servers, and docs/certification.md against LEVELS."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from nfsconf.catalog import catalog, markdown_table
from nfsconf.report.certify import KERNEL_ONLY, LEVELS, certify, levels_markdown
from nfsconf.report.results import Result, Run
from nfsconf.servers.builtin import find_profile
from nfsconf.servers.profile import ProfileError

DOC = Path(__file__).resolve().parent.parent / "docs" / "certification.md"
README = Path(__file__).resolve().parent.parent / "README.md"
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


def nfsconf(*args):
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", *args], capture_output=True,
                          text=True, timeout=600)


# fuse-overlayfs is not here: its nodeids are heap addresses, and REUSE sometimes finds a
# freed one handed to a new file (WRONG-OBJ, level 0), sometimes not (level 1)
EXPECTED = {"bindfs": 1, "bindfs-noforget": 2}


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    out = tmp_path_factory.mktemp("cert")
    r = nfsconf("certify", *(a for p in EXPECTED for a in ("--profile", p)), "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    certs = {c["profile"]: c for c in json.loads((out / "certificate.json").read_text())}
    return out, r.stdout, certs


@ROOT
def test_levels_of_real_servers(certified):
    _, stdout, certs = certified
    # bindfs: libfuse forgets nodes, a cold handle gets ESTALE; noforget keeps them
    blocking = {p: [(st["number"], i["scenario"], i["cell"]) for st in c["levels"]
                    for i in st["blocking"]] for p, c in certs.items()}
    assert {p: c["level"] for p, c in certs.items()} == EXPECTED, (blocking, stdout[-3000:])
    assert f"bindfs-noforget ({certs['bindfs-noforget']['server_version']}): LEVEL 2" in stdout
    # what to fix for the next level is named, cell by cell
    nxt = next(st for st in certs["bindfs"]["levels"] if st["number"] == 2)
    assert not nxt["earned"]
    assert {"DEC-COLD/file", "PARENT-DIR"} <= {i["scenario"] for i in nxt["blocking"]}
    assert "to reach it, fix:" in stdout and "DEC-COLD/file: FAIL ESTALE" in stdout
    # noforget: handles made before a remount open other objects: a warning above level 2
    assert {i["scenario"] for i in certs["bindfs-noforget"]["warnings"]} >= {"RESTART-SAFE/file"}


@ROOT
def test_certificate_records_where_it_was_earned(certified):
    out, _, certs = certified
    env = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    for c in certs.values():
        assert c["kernel"] == platform.release() == env["kernel"]
        assert c["transport"] == "local"
        assert c["fuse_protocol"] == env["fuse"]["protocol"]
        assert c["kernel_image"] == env["kernel_image"]
        assert c["server_version"] == env["profiles"][c["profile"]] != "?"


@ROOT
def test_min_level_gate_and_certify_from_results(certified):
    out, _, _ = certified
    r = nfsconf("certify", "--results", str(out), "--profile", "bindfs-noforget",
                "--min-level", "2")
    assert r.returncode == 0 and "LEVEL 2" in r.stdout
    r = nfsconf("certify", "--results", str(out), "--min-level", "2")
    assert r.returncode == 1 and "below level 2: bindfs" in r.stdout
    r = nfsconf("certify", "--results", str(out), "--profile", "mergerfs")
    assert r.returncode == 2 and "no results of profile mergerfs" in r.stderr


def test_document_matches_levels():
    """docs/certification.md's table is the contract vendors read: it is LEVELS, which the
    scenarios' own markers make."""
    assert levels_markdown() in DOC.read_text(), "regenerate with certify.levels_markdown()"


def test_readme_table_is_the_catalog():
    assert markdown_table() in README.read_text(), "regenerate: nfsconf scenarios --markdown"


def test_catalog_agrees_with_what_pytest_collects():
    """The catalog reads the markers from the source; pytest must see the same markers."""
    r = subprocess.run([sys.executable, "-m", "pytest", str(SCENARIOS), "--collect-only", "-q",
                        "-p", "no:cacheprovider", "--nfsconf-profile", "bindfs",
                        "--co", "-o", "console_output_style=classic"],
                       capture_output=True, text=True, timeout=120, cwd=SCENARIOS.parent)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    collected = {line.split("::")[1].split("[")[0] for line in r.stdout.splitlines()
                 if "::" in line}
    assert collected == {s.function for s in catalog()}
    ids = [s.id for s in catalog()]
    assert len(ids) == len(set(ids))
    assigned = [sid for lv in LEVELS for sid in lv.must + lv.should]
    assert sorted(assigned + list(KERNEL_ONLY)) == sorted(ids)


# -- pure code: the rules ---------------------------------------------------------------
def _cells(**verdicts):
    known = {sid for level in LEVELS for sid in level.must + level.should}
    assert set(verdicts) <= known, f"not scenario IDs of any level: {set(verdicts) - known}"
    out = []
    for level in LEVELS:
        for sid in level.must + level.should:
            out.append(Result(sid, "", "MUST", "p", "local", verdicts.get(sid, "PASS")))
    return out


def _level(results):
    return certify(Run(Path("r"), [{"kernel": "k"}], results), "p").level


def test_rules():
    top = LEVELS[-1].number
    assert _level(_cells()) == top == 5  # everything passes
    assert _level(_cells(**{"LH-RESTART": "FAIL"})) == 4
    assert _level(_cells(**{"IN-FLIGHT": "FAIL"})) == 3
    assert _level(_cells(RESTART="FAIL")) == 2
    assert _level(_cells(HARDLINK="FAIL", **{"READDIR-INO": "FAIL"})) == top  # SHOULD never
    assert _level(_cells(UNLINK="SKIP")) == top  # not applicable
    assert _level(_cells(REUSE="ERROR")) == 0  # not shown is not earned
    assert _level(_cells(**{"DEC-COLD": "FAIL"})) == 1
    assert _level([r for r in _cells() if r.id != "STABLE"]) == 1  # not run blocks
    only_skips = [r if r.id not in LEVELS[3].must else Result(r.id, "", "MUST", "p", "local",
                                                             "SKIP") for r in _cells()]
    assert _level(only_skips) == 2  # a level of nothing but SKIP is not earned


def test_blocking_items_name_what_ran_and_what_did_not():
    """A level whose cells all SKIPped names the scenarios that SKIPped; one of its
    scenarios without any cell is named once, as not run."""
    five = LEVELS[5]
    first, *rest = five.must
    results = [r if r.id not in five.must else Result(r.id, "", "MUST", "p", "local", "SKIP")
               for r in _cells() if r.id != first]
    status = certify(Run(Path("r"), [{"kernel": "k"}], results), "p").levels[5]
    assert not status.earned
    by_cell = {item.cell: item.scenario for item in status.blocking}
    assert by_cell == {"not run": first, "all SKIP": ",".join(rest)}


# -- what a vendor's profile claims ------------------------------------------------------
PROFILES = Path(__file__).resolve().parent / "data" / "profiles"
VENDOR = """
name = "myfs"
mount = ["myfs", "-f", "{source}", "{mountpoint}"]
[claims]
restart = true
lookup_handle = true
"""


def test_profile_claims_lookup_handle(tmp_path):
    path = tmp_path / "myfs.toml"
    path.write_text(VENDOR)
    p = find_profile(str(path))
    assert p.claims.lookup_handle and p.claims.restart and not p.claims.cold_decode
    assert p.refserver is None  # a command profile: nfsconf knows nothing of its insides
    path.write_text(VENDOR.replace("lookup_handle = true", "lookup_handle = false"))
    assert not find_profile(str(path)).claims.lookup_handle


@pytest.mark.parametrize("typo,words", [
    ("lookup_handel = true", ["unknown key 'claims.lookup_handel'",
                              "did you mean 'claims.lookup_handle'?"]),
    ("lookuphandle = true", ["did you mean 'claims.lookup_handle'?"]),
    ('lookup_handle = "yes"', ["key 'claims.lookup_handle'", "true or false"]),
])
def test_profile_claim_typo_is_named(tmp_path, typo, words):
    path = tmp_path / "myfs.toml"
    path.write_text(VENDOR.replace("lookup_handle = true", typo))
    with pytest.raises(ProfileError) as e:
        find_profile(str(path))
    assert str(e.value).startswith(str(path))
    for w in words:
        assert w in str(e.value)


def test_top_level_typo_gets_a_suggestion(tmp_path):
    path = tmp_path / "myfs.toml"
    path.write_text(VENDOR.replace("[claims]", "writeable = true\n[claims]"))
    with pytest.raises(ProfileError, match="unknown key 'writeable'; did you mean 'writable'"):
        find_profile(str(path))


def test_relative_command_is_the_profile_directory_s(tmp_path, monkeypatch):
    """A server shipped beside its profile runs whatever directory nfsconf starts in; a bare
    command name is still looked up on PATH."""
    (tmp_path / "bin").mkdir()
    server = tmp_path / "bin" / "myfs"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    path = tmp_path / "myfs.toml"
    path.write_text(VENDOR.replace('"myfs", "-f"', '"bin/myfs", "-f"'))
    monkeypatch.chdir("/")
    p = find_profile(str(path))
    assert p.binary == str(server) and p.installed()
    path.write_text(VENDOR)
    assert find_profile(str(path)).binary == "myfs"


def test_vendor_test_profiles_are_command_profiles():
    """tests/data/profiles: the reference server run as a vendor's server (its script beside
    the profiles), claiming LOOKUP_HANDLE honestly or not."""
    honest = find_profile(str(PROFILES / "vendor-lh.toml"))
    liars = [find_profile(str(PROFILES / f"vendor-lh-{x}.toml")) for x in ("liar", "volatile")]
    for p in (honest, *liars):
        assert p.refserver is None and p.claims.lookup_handle and p.installed(), p
        assert p.binary == str(PROFILES / "nfsconf-refserver")
    assert "--lookup-handle=auto" in honest.mount and "--nodeid=stable" in honest.mount
    assert "--lookup-handle=off" in liars[0].mount
    assert "--handle-salt=instance" in liars[1].mount
    r = subprocess.run([honest.binary, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--lookup-handle" in r.stdout, r.stderr

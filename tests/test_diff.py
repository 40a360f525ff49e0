"""`nfsconf diff` on real runs.

Only one kernel runs here, so the two runs differ by server, the other axis diff serves
(a server release under review against the last one). Two real runs:
  BASE = fuse-overlayfs, bindfs-noforget and bindfs;  NEW = bindfs.
- fuse-overlayfs -> bindfs (`--pair`): fuse-overlayfs answers ESTALE after a remount, bindfs
  hands out other objects: RESTART-SAFE, a MUST, regresses -> exit 1.
- bindfs-noforget -> bindfs: the same binary without noforget, like a release that dropped
  persistent nodeids: only SHOULD scenarios regress -> exit 0 (the MUST rule).
- bindfs -> bindfs-noforget: the fixes.
- bindfs -> bindfs (no pairing): two runs of one server: no regression, no changed evidence.
"""

import os
import platform
import subprocess
import sys

import pytest

from nfsconf.report.diff import diff
from nfsconf.report.expect import Expectations, parse
from nfsconf.report.results import Result, ResultsError, Run, load_run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


COLD_FAMILY = {"DEC-COLD/file", "DEC-COLD/dir", "STABLE/file", "STABLE/dir", "RENAME/file",
               "RENAME/dir", "MOVE/file", "MOVE/dir", "PARENT-CONN", "PARENT-DIR"}


def nfsconf(*args):
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base, new = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("new")
    for out, profiles in ((base, ("fuse-overlayfs", "bindfs-noforget", "bindfs")),
                          (new, ("bindfs",))):
        args = [a for p in profiles for a in ("--profile", p)]
        r = nfsconf("run", *args, "--out", str(out))
        assert r.returncode == 0, r.stderr[-2000:]
    return base, new


def _section(text, title):
    """The lines of one section of the text report."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_must_regression_exits_1(runs):
    base, new = runs
    r = nfsconf("diff", str(base), str(new), "--pair", "fuse-overlayfs:bindfs")
    assert r.returncode == 1, r.stdout + r.stderr
    regressions = "\n".join(_section(r.stdout, "Regressions"))
    assert "RESTART-SAFE/file" in regressions and "RESTART-SAFE/dir" in regressions
    assert "fuse-overlayfs -> bindfs" in regressions
    # RESTART was already failing (ESTALE); opening other objects instead is worse
    assert "now opens another object" in regressions
    # the same from the API, cell by cell
    d = diff(load_run(base), load_run(new), pairs={"fuse-overlayfs": "bindfs"})
    must = {c.key[0] for c in d.must_regressions}
    assert {"RESTART-SAFE/file", "RESTART-SAFE/dir"} <= must
    for c in d.must_regressions:
        assert c.new.verdict in ("FAIL", "ERROR") and c.new.must
    assert all(c.key[1] == "bindfs" for c in d.changes)


def test_should_regressions_exit_0(runs):
    base, new = runs
    r = nfsconf("diff", str(base), str(new), "--pair", "bindfs-noforget:bindfs")
    assert r.returncode == 0, r.stdout + r.stderr
    d = diff(load_run(base), load_run(new), pairs={"bindfs-noforget": "bindfs"})
    rows = {c.key[0] for c in d.of("regression")}
    # a cell that stays cached through drop_caches (another process walking the tree) can
    # pass by luck, so ask for most of the cold-decode family, not each one
    assert len(rows & COLD_FAMILY) >= 6, rows
    assert all(c.level == "SHOULD" for c in d.of("regression"))
    assert not d.must_regressions
    assert "0 MUST regression(s)" in r.stdout


def test_fixes_listed(runs):
    base, new = runs
    r = nfsconf("diff", str(new), str(base), "--pair", "bindfs:bindfs-noforget",
                "--format", "markdown")
    assert r.returncode == 0
    fixes = r.stdout[r.stdout.index("## Fixes"):]
    fixes = fixes[:fixes.index("\n\n")]
    assert sum(f"| {row} " in fixes for row in COLD_FAMILY) >= 6, fixes
    assert "HARDLINK" not in fixes  # still ESTALE with noforget


def test_same_server_twice_is_quiet(runs):
    base, new = runs
    d = diff(load_run(base), load_run(new))
    must = [(c.kind, c.key, c.detail) for c in d.changes
            if c.level == "MUST" and c.kind != "only-base"]
    assert not must  # SHOULD cold decodes may flip by luck (see above); MUST ones never
    assert all(c.key[0] in COLD_FAMILY | {"HARDLINK"} for c in d.changes
               if c.kind != "only-base"), [(c.kind, c.key) for c in d.changes]
    # the profiles NEW did not run are listed, not silently dropped
    assert {c.key[1] for c in d.of("only-base")} == {"fuse-overlayfs", "bindfs-noforget"}
    r = nfsconf("diff", str(base), str(new))
    assert r.returncode == 0 and "Cells NEW did not run" in r.stdout


def test_expectations_turn_failures_into_xfail_and_report_xpass(runs, tmp_path):
    base, new = runs
    kernel = platform.release()
    (tmp_path / kernel).mkdir()
    (tmp_path / kernel / "bindfs.txt").write_text(
        "# known on this kernel\nRESTART*   # nodeids restart at 1 after a remount\n")
    (tmp_path / "any").mkdir()
    (tmp_path / "any" / "bindfs-noforget.txt").write_text("DEC-COLD/file  # thought broken\n")
    r = nfsconf("diff", str(base), str(new), "--pair", "fuse-overlayfs:bindfs",
                "--expect", str(tmp_path))
    assert r.returncode == 0, r.stdout  # the MUST regression is a known failure now
    assert "XFAIL" in r.stdout and "nodeids restart at 1" in r.stdout
    r = nfsconf("diff", str(new), str(base), "--pair", "bindfs:bindfs-noforget",
                "--expect", str(tmp_path))
    xpass = "\n".join(_section(r.stdout, "Expected failures now passing"))
    assert "DEC-COLD/file" in xpass and "DEC-COLD/dir" not in xpass
    r = nfsconf("report", str(new), "--expect", str(tmp_path), "--format", "terminal",
                "--out", str(tmp_path / "view"))
    assert "XFAIL WRONG-OBJ" in (tmp_path / "view" / "matrix.txt").read_text()


def test_bad_input_is_one_line(runs, tmp_path):
    base, new = runs
    for args, words in ((["--pair", "nope:bindfs"], "BASE has no profile nope"),
                        (["--pair", "bindfs"], "BASE_PROFILE:NEW_PROFILE"),
                        (["--expect", str(tmp_path / "none")], "no such expectations")):
        r = nfsconf("diff", str(base), str(new), *args)
        assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = nfsconf("diff", str(base), str(tmp_path))
    assert r.returncode == 2 and "no such results file" in r.stderr


# -- pure code --------------------------------------------------------------------------
def _r(row, verdict, profile="p", wrong=False, errno=None, level="MUST", decodes=None):
    rid, _, variant = row.partition("/")
    evidence = {"decodes": {label: {"outcome": outcome, "error": outcome
                                    if outcome not in ("same", "other") else None}
                            for label, outcome in (decodes or {}).items()}}
    return Result(rid, variant, level, profile, "local", verdict, errno=errno,
                  wrong_object=wrong, evidence=evidence)


def test_classification_rules():
    base = Run("b", [{"kernel": "k"}], [
        _r("A", "PASS"), _r("B", "FAIL", errno="ESTALE"), _r("C", "PASS"), _r("D", "SKIP"),
        _r("E", "FAIL", errno="ESTALE"), _r("F", "FAIL", errno="ESTALE"), _r("G", "PASS"),
        _r("S", "PASS", level="SHOULD")])
    new = Run("n", [{"kernel": "k"}], [
        _r("A", "FAIL"), _r("B", "PASS"), _r("C", "SKIP"), _r("D", "FAIL"),
        _r("E", "FAIL", wrong=True), _r("F", "FAIL", errno="ENOENT"), _r("H", "PASS"),
        _r("S", "FAIL", level="SHOULD")])
    d = diff(base, new)
    kinds = {c.key[0]: c.kind for c in d.changes}
    assert kinds == {"A": "regression", "B": "fix", "C": "newly-skipped", "D": "new-failure",
                     "E": "regression", "F": "info", "G": "only-base", "H": "only-new",
                     "S": "regression"}
    assert {c.key[0] for c in d.must_regressions} == {"A", "E"}
    info = next(c for c in d.changes if c.key[0] == "F")
    assert info.level == "info" and "errno: ESTALE -> ENOENT" in info.detail


def test_accepted_outcomes_are_one_class():
    """UNLINK accepts ESTALE and ENOENT: two runs that got one each are the same evidence,
    at any level. A move between classes (an error -> the object, or -> another object) is
    a change; so is a FAIL that turns ERROR."""
    base = Run("b", [{"kernel": "k"}], [
        _r("UNLINK/file-warm", "PASS", errno="ESTALE", decodes={"after": "ESTALE"}),
        _r("UNLINK/dir-cold", "PASS", errno="NFS3ERR_STALE", decodes={"after": "NFS3ERR_STALE"}),
        _r("DEC-COLD/file", "FAIL", errno="ESTALE", level="SHOULD", decodes={"cold": "ESTALE"}),
        _r("RESTART/dir", "FAIL", errno="ESTALE", level="SHOULD", decodes={"a": "ESTALE"}),
        _r("X", "FAIL", errno="ESTALE")])
    new = Run("n", [{"kernel": "k"}], [
        _r("UNLINK/file-warm", "PASS", errno="ENOENT", decodes={"after": "ENOENT"}),
        _r("UNLINK/dir-cold", "PASS", errno="ESTALE", decodes={"after": "ESTALE"}),
        _r("DEC-COLD/file", "FAIL", errno="EIO", level="SHOULD", decodes={"cold": "EIO"}),
        _r("RESTART/dir", "FAIL", level="SHOULD", decodes={"a": "same"}),
        _r("X", "ERROR", errno="ESTALE")])
    d = diff(base, new)
    kinds = {c.key[0]: (c.kind, c.level) for c in d.changes}
    assert kinds == {"UNLINK/file-warm": ("info", "info"), "UNLINK/dir-cold": ("info", "info"),
                     "DEC-COLD/file": ("info", "info"), "RESTART/dir": ("evidence", "SHOULD"),
                     "X": ("evidence", "MUST")}
    assert "decode a: error -> same" in next(c.detail for c in d.changes
                                             if c.key[0] == "RESTART/dir")
    assert "verdict FAIL -> ERROR" in next(c.detail for c in d.changes if c.key[0] == "X")
    assert not d.must_regressions


def test_expectation_file_errors():
    assert [e.pattern for e in parse("A  # x\n\n# c\nB/file\nR*\n", "f")] == ["A", "B/file", "R*"]
    with pytest.raises(ResultsError, match="f:2: not a scenario row"):
        parse("A\nnot a row\n", "f")
    e = parse("UNLINK\n", "f")[0]
    assert e.matches("UNLINK") and e.matches("UNLINK/file-cold") and not e.matches("UNLINKX")


def test_expectations_per_kernel(tmp_path):
    (tmp_path / "6.1").mkdir()
    (tmp_path / "6.1" / "p.txt").write_text("A\n")
    ex = Expectations(tmp_path)
    results = [_r("A", "FAIL")]
    assert ex.apply("6.1", results)[0].verdict == "XFAIL"
    assert ex.apply("6.18", results)[0].verdict == "FAIL"

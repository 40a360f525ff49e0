"""Killing `nfsconf run` half way (SIGKILL, SIGTERM), then `nfsconf run --resume DIR`, gives
the same cells and verdicts as an uninterrupted run.

The scenarios are those whose verdict does not depend on what the page cache holds at the
instant of a decode (encoding, readdir, unlinked and reused handles, remounts): other
processes of this machine may drop caches at any time, which can flip a warm or cold decode
between two runs and would make the comparison test the machine instead of --resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from nfsconf.mounttable import mounts, umount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")
SELECT = "ENC or READDIR or UNLINK or REUSE or RESTART"
PROFILES = ("--profile", "bindfs", "--profile", "bindfs-noforget")


def _argv(*args):
    return [sys.executable, "-m", "nfsconf.cli", "run", *args]


def _cells(out):
    cells = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        d = json.loads(line)
        if d["kind"] == "result":
            key = (d["id"], d["variant"], d["profile"], d["transport"])
            assert key not in cells, f"cell recorded twice: {key}"
            # the verdict as the matrix shows it; not the errno: after a remount a walk may
            # meet ESTALE on one handle before the wrong objects, or not
            cells[key] = (d["verdict"], d["wrong_object"])
    return cells


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    r = subprocess.run(_argv(*PROFILES, "-k", SELECT, "--out", str(out)), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return _cells(out)


def _ours(tag):
    """Processes of the killed run: every server has its lab directory, under `tag`, in
    its command line."""
    return [p for p in psutil.process_iter(["cmdline", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE
            and any(str(tag) in a for a in (p.info["cmdline"] or []))]


def _clean_up(tag):
    """What a SIGKILLed run could not: end its servers and unmount its labs. The servers go
    first: one the kill caught half way through its set-up can still mount after a sweep of
    the mount table, and then stays mounted with nobody serving it."""
    for p in _ours(tag):
        p.kill()
    psutil.wait_procs(_ours(tag), timeout=10)
    for m in mounts():
        if m.mountpoint.startswith(str(tag)):
            umount(m.mountpoint, lazy=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_report(reference, tmp_path, sig):
    out, labs = tmp_path / "run", tmp_path / "labs"
    labs.mkdir()
    results = out / "results.jsonl"
    env = {**os.environ, "TMPDIR": str(labs)}  # every lab of this run lives under `labs`
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(_argv(*PROFILES, "-k", SELECT, "--out", str(out)), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not results.exists() or results.read_text().count('"kind": "result"') < 8:
            assert proc.poll() is None, (tmp_path / "log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the run recorded nothing"
            time.sleep(0.01)
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        # SIGTERM unwinds like Ctrl-C: every lab unmounted, every server ended
        assert code == 130, (tmp_path / "log").read_text()[-2000:]
        assert not [m for m in mounts() if m.mountpoint.startswith(str(labs))]
        assert not _ours(labs)
    else:
        assert code == -signal.SIGKILL
    _clean_up(labs)

    partial = _cells(out)
    assert 8 <= len(partial) < len(reference), "the kill did not land half way"
    assert partial.items() <= reference.items()

    r = subprocess.run(_argv("--resume", str(out)), capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # only what was missing ran: the progress counts it (right-aligned to its width)
    assert re.search(rf"^\[ *1/{len(reference) - len(partial)}\]", r.stdout, re.M), \
        r.stdout[-2000:]
    final = _cells(out)
    assert final.keys() == reference.keys()
    diff = {k: (reference[k], final[k]) for k in final if final[k] != reference[k]}
    assert not diff
    envs = [json.loads(line) for line in results.read_text().splitlines()
            if '"kind": "env"' in line]
    assert len(envs) == 2 and envs[1]["resumed"] and envs[1]["run"]["k"] == SELECT
    assert (out / "report.html").exists() and (out / "junit.xml").exists()
    assert not [m for m in mounts() if m.mountpoint.startswith(str(labs))]
    assert not _ours(labs)


def test_resume_refuses_what_it_cannot_finish(tmp_path):
    r = subprocess.run(_argv("--resume", str(tmp_path)), capture_output=True, text=True)
    assert r.returncode == 2 and "no such results file" in r.stderr
    env = {"kind": "env", "schema": 1, "kernel": "0.0-other", "transport": "local",
           "profiles": {"bindfs": "1"}}
    (tmp_path / "results.jsonl").write_text(json.dumps(env) + "\n")
    r = subprocess.run(_argv("--resume", str(tmp_path)), capture_output=True, text=True)
    assert r.returncode == 2 and "was run on kernel 0.0-other" in r.stderr

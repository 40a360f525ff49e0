"""The knfsd transport for real: boot Debian's kernel line 6.1 on both engines (bookworm's
bzImage under qemu's TCG, bookworm's User-Mode Linux), export the FUSE mount with knfsd, and
run one NFSv3 and one NFSv4.1 scenario through the raw client; `bench vm` makes both runs
and measures them side by side. The lane's own logic (selection, interruption) runs on
UML."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from nfsconf_cli import AS_ROOT, engine_processes, needs

from nfsconf.report.results import load_run

pytestmark = [pytest.mark.vm, AS_ROOT, needs("qemu-system-x86_64", "qemu-system-x86")]
# the lane's own logic runs on Debian's newest UML: seccomp mode, twice the speed of 6.1's
SID = "uml:debian:sid"


# the tests that read `bench` run on one pytest-xdist worker: a module fixture is made once
# per worker, and this one is a two-minute qemu run
SHARES_BENCH = pytest.mark.xdist_group("qemu-bench")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The same knfsd lane on both engines, made by `bench vm` (which also boots each bare
    kernel): the smoke checks each run's verdicts, the bench test its figures."""
    d = tmp_path_factory.mktemp("bench-vm")
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "bench", "vm",
                        "--kernel", "debian:bookworm", "--uml-kernel", "uml:debian",
                        "--profile", "bindfs",
                        "--profile", "bindfs-noforget",
                        "-k", "(DEC-COLD and not SAFE and file) or (NFS-V4-FH and dir)",
                        "--dir", str(d), "--out", str(d / "vm.json")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert engine_processes(started) == []
    return d, r.stdout


@SHARES_BENCH
@pytest.mark.parametrize("engine", ["qemu", "uml"])
def test_knfsd_smoke(bench, engine):
    out = bench[0] / engine
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    env, results = records[0], records[1:]
    assert env["transport"] == "knfsd"
    assert env["kernel"] != os.uname().release  # the guest's kernel, not the host's
    assert env["kernel_image"]["sha256"] and env["kernel_image"]["build_id"]
    assert env["kernel_image"]["engine"] == engine
    cell = {(x["id"], x["variant"], x["profile"], x["transport"]): x for x in results}
    for transport in ("knfsd", "knfsd-subtree"):
        # NFSv3 raw client: bindfs goes STALE after drop_caches in the guest, noforget holds
        plain = cell[("DEC-COLD", "file", "bindfs", transport)]
        assert plain["verdict"] == "FAIL" and plain["errno"] == "NFS3ERR_STALE", plain
        held = cell[("DEC-COLD", "file", "bindfs-noforget", transport)]
        assert held["verdict"] == "PASS", held
        assert held["evidence"]["decodes"]["cold"]["got"]["marker"].startswith("nfsconf ")
        # NFSv4.1 session: PUTFH/GETFH round trip and fileid = st_ino
        assert cell[("NFS-V4-FH", "dir", "bindfs-noforget", transport)]["verdict"] == "PASS"
    boots = [json.loads(x) for x in (out / "vm.jsonl").read_text().splitlines()]
    assert len(boots) == 1 and boots[0]["exit"] == 0 and boots[0]["crash"] is None, boots
    assert boots[0]["engine"] == engine


@SHARES_BENCH
def test_bench_vm_measures_both_engines_side_by_side(bench):
    d, stdout = bench
    result = json.loads((d / "vm.json").read_text())
    assert result["anchor"] == "qemu"
    for engine, run in result["engines"].items():
        bare, lane = run["bare"], run["lane"]
        assert bare["boot"] > 0 and lane["boot"] > 0
        vm = json.loads((d / engine / "vm.jsonl").read_text().splitlines()[0])
        assert lane["first_result"] == vm["first_result"] and lane["vm"] == vm["seconds"]
        assert lane["first_result"] > lane["boot"]
        # the guest's own marks, in the order the guest reached them; knfsd's daemons come
        # up beside the first cells, once the pseudo-root is there
        got = lane["guest_marks"]
        marks = [got[m] for m in ("shell", "python", "pseudo-root", "run")]
        assert marks == sorted(marks) and got["knfsd"] >= got["pseudo-root"], got
        results = load_run(d / engine).results
        assert lane["cells"] == len([x for x in results if x.verdict != "SKIP"]) > 0
    q, u = result["engines"]["qemu"]["lane"], result["engines"]["uml"]["lane"]
    assert result["speedup"]["first result"] == pytest.approx(
        q["first_result"] / u["first_result"], abs=0.01)
    # one kernel line, two engines: the same verdicts (what `nfsconf diff` checks in full)
    assert result["verdicts_differ"] == [] and q["verdicts"] == u["verdicts"]
    assert "speed-up (ratio)" in stdout and "the same on both engines" in stdout


def test_selection_that_matches_nothing_in_the_guest_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "--transport", "knfsd",
                        "--kernel", SID, "--profile", "bindfs", "-k",
                        "NO-SUCH-SCENARIO", "--out", str(tmp_path / "run"), "--vm-timeout", "600",
                        "--kernel-arg", "nfsconf.smoke=1"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "no scenario matched" in r.stderr, r.stderr[-2000:]
    # the guest got as far as its environment record, with the extra kernel parameter
    env = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[0])
    assert "nfsconf.smoke=1" in env["kernel_cmdline"].split(), env["kernel_cmdline"]


def test_a_guest_process_that_dies_in_a_cell_is_that_cells_error(tmp_path):
    """The suite's process in the guest dies of a signal in one cell (libnfs segfaulted so
    on a LOOKUP_HANDLE kernel): that cell is ERROR with the signal, the guest boots again
    and the cells after it run."""
    from pathlib import Path

    started = time.time()
    scenarios = Path(__file__).parent / "data" / "guest_death_scenarios.py"
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "--transport", "knfsd",
                        "--kernel", SID, "--profile", "ref-stable", "--scenarios",
                        str(scenarios), "--out", str(out), "--vm-timeout", "600"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cells = {(x.id, x.transport): x for x in load_run(out).results}
    for transport in ("local", "knfsd", "knfsd-subtree"):
        died = cells[("SUITE-SEGV", transport)]
        assert died.verdict == "ERROR" and "died of SIGSEGV" in died.reason, died
        assert cells[("AFTER-SEGV", transport)].verdict == "PASS"
    assert "the guest's Python died of SIGSEGV" in r.stdout
    assert engine_processes(started) == []


def test_sigterm_powers_off_every_vm_of_a_multi_kernel_run(tmp_path):
    """Two kernels at once: SIGTERM after the first result ends the run with 130, both VMs
    powered off (they run in threads, which no signal reaches) with every host process of
    theirs (a UML guest process is one), the results written kept."""
    from nfsconf.vm.kernels import default_cache_dir, resolve_kernel

    out = tmp_path / "run"
    started = time.time()
    # Debian's UML twice over: by name, and by the path of its binary
    binary = resolve_kernel(SID, default_cache_dir()).image
    proc = subprocess.Popen([sys.executable, "-m", "nfsconf.cli", "run", "--transport",
                             "knfsd", "--kernel", SID, "--kernel", str(binary),
                             "--jobs", "2", "--profile", "bindfs", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first cell of either kernel
            if "] [  1/" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest[-2000:]
    assert engine_processes(started) == []
    kept = [p for p in out.glob("*/results.jsonl") if '"kind": "result"' in p.read_text()]
    assert kept, list(out.iterdir())


def test_guests_of_one_kernel_take_each_cell_once(tmp_path):
    """--jobs 3 on one kernel: three guests share its matrix by claims (OUT/claims). A
    selection too small to give every guest a cell is no error; every cell is recorded once,
    in the directory of the guest holding its claim, each guest's plan is what it took, and
    nothing is left running. --out is relative, as make run's default is."""
    from nfsconf import claims

    out = tmp_path / "run"
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "--transport", "knfsd",
                        "--kernel", SID, "--jobs", "3", "--profile", "ref-stable",
                        "-k", "DEC-WARM", "--out", "run"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = claims.plan(out / claims.CLAIMS)
    assert len(plan) == 6, plan  # file and dir, over local, knfsd, knfsd-subtree
    holders = claims.holders(out / claims.CLAIMS)
    assert set(holders) == set(plan)
    guests = sorted(out.glob("shard-*-of-3"))
    assert len(guests) == 3
    recorded: dict[str, str] = {}
    for guest in guests:
        for x in load_run(guest).results:
            assert x.node not in recorded, x.node
            recorded[x.node] = guest.name
            assert x.verdict == "PASS", x
        took = json.loads((guest / "planned.json").read_text())
        assert sorted(took) == sorted(n for n, h in holders.items() if h == guest.name)
    assert recorded == holders
    assert "3 guests, 6 results" in r.stdout
    assert engine_processes(started) == []


def test_a_knfsd_drop_leaves_nfsd_holding_nothing(tmp_path):
    """After a warm NFS READ nfsd's file cache holds the file; the lab's drop_caches leaves
    nfsd nothing open, nothing queued for close and no thread running, and the cold decode
    after it asks the FUSE server, twenty rounds in a row on both exports. On a guest with
    nothing else to free, the drop still evicts a file used since the last one."""
    from pathlib import Path

    started = time.time()
    scenarios = Path(__file__).parent / "data" / "nfsd_refs_scenarios.py"
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "--transport", "knfsd",
                        "--kernel", SID, "--profile", "ref-stable", "--scenarios",
                        str(scenarios), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = load_run(out).results
    cells = {x.transport: x for x in results if x.id == "NFSD-REFS"}
    for transport in ("knfsd", "knfsd-subtree"):
        assert cells[transport].verdict == "PASS", cells[transport]
        held = cells[transport].evidence["nfsd_files_before_each_drop"]
        assert len(held) == 20 and all(held), held
    quiet = {x.transport: x.verdict for x in results if x.id == "DROP-QUIET"}
    assert quiet == dict.fromkeys(("local", "knfsd", "knfsd-subtree"), "PASS"), quiet
    assert engine_processes(started) == []

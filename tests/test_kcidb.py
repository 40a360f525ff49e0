"""`nfsconf report --format kcidb`: the mapping from results to KernelCI's database schema as
pure code (statuses, paths, IDs, excerpts, merging), the records it finds beside a kernel,
and real runs — the host's kernel, and knfsd on Debian's User-Mode Linux beside a tree of
`nfsconf kernel build` — each report validated by kcidb-io's own latest schema."""

import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kcidb_io.schema import LATEST
from nfsconf_cli import AS_ROOT, SHARED, needs, nfsconf

from nfsconf.cli import build_parser
from nfsconf.errors import ResultsError, UsageError
from nfsconf.report import kcidb
from nfsconf.report.results import Result, Run, load_run

ROOT = Path(__file__).resolve().parent.parent
SERIES = SHARED / "kernels" / "lookup-handle-v2" / "series"
ORIGIN = "nfsconf_test"
PATH_RE = re.compile(LATEST.json["$defs"]["path"]["pattern"])
VERDICTS = ("PASS", "FAIL", "ERROR", "SKIP")

# --- pure mapping -------------------------------------------------------------------------


def cell(**kw) -> Result:
    base = dict(id="DEC-COLD", variant="file", level="MUST", profile="bindfs",
                transport="local", verdict="PASS", duration=0.5)
    return Result(**{**base, **kw})


def env(kernel="6.1.0-57-amd64", started="2026-01-02T03:04:05+00:00", **image) -> dict:
    return {"kind": "env", "nfsconf": "0.1.0", "started": started, "kernel": kernel,
            "kernel_version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-07-04)",
            "machine": "x86_64", "transport": "local", "profiles": {"bindfs": "1.14.7-1"},
            "fuse": {"protocol": "7.38"},
            "kernel_image": {"build_id": "ab" * 20, "path": None, "sha256": None,
                             "engine": "host", **image}}


def part(results, e=None, facts=None) -> kcidb.Part:
    e = e or env()
    return kcidb.Part(Run(Path("/nonexistent/results.jsonl"), [e], results),
                      facts or kcidb.KernelFacts())


@pytest.mark.parametrize("verdict", VERDICTS)
def test_verdicts_keep_their_name(verdict):
    assert kcidb.status_of(cell(verdict=verdict)) == verdict


@pytest.mark.parametrize("was, status", [("FAIL", "FAIL"), ("ERROR", "ERROR"), (None, "FAIL")])
def test_xfail_is_the_verdict_it_was(was, status):
    """KCIDB has no expected failure: the code failed, the listing rides along in misc."""
    expectation = {"file": "x/any/bindfs.txt", "line": 1, "comment": "known", "was": was}
    r = cell(verdict="XFAIL", reason="expected (known); FAIL: ESTALE",
             evidence={"expectation": expectation} if was else {})
    assert kcidb.status_of(r) == status
    test = kcidb.report([part([r])], ORIGIN)["tests"][0]
    assert test["status"] == status and test["misc"]["verdict"] == "XFAIL"
    if was:
        assert test["misc"]["expectation"] == expectation


def test_an_unknown_verdict_is_refused():
    with pytest.raises(ResultsError, match="MAYBE"):
        kcidb.status_of(cell(verdict="MAYBE"))


def test_a_kernel_crash_is_a_fail_with_the_oops_as_excerpt():
    lines = ["BUG: kernel NULL pointer dereference, address: 0000000000000000",
             "RIP: 0010:fuse_iget+0xd0/0x410", "Call Trace:", " fuse_lookup_name+0x1/0x2"]
    r = cell(verdict="FAIL", reason="kernel oops: BUG: kernel NULL pointer dereference",
             evidence={"kernel_crash": {"kind": "oops", "title": lines[0], "lines": lines,
                                        "rip": "fuse_iget+0xd0/0x410", "trace": []},
                       "console": "/run/console-1.log"})
    test = kcidb.report([part([r])], ORIGIN)["tests"][0]
    assert test["status"] == "FAIL"
    assert test["log_excerpt"].splitlines() == lines
    assert test["misc"]["kernel_crash"] == lines[0] and test["misc"]["must"] is True
    # the kernel's WARN lines that failed a cell, after its reason
    warned = cell(verdict="FAIL", reason="kernel log: WARNING", evidence={
        "kernel_log": ["WARNING: CPU: 0 PID: 1 at fs/fuse/inode.c:1 x"]})
    assert kcidb.log_excerpt(warned).splitlines() == [
        "kernel log: WARNING", "WARNING: CPU: 0 PID: 1 at fs/fuse/inode.c:1 x"]


def test_excerpts_fit_the_schema():
    huge = cell(verdict="FAIL", evidence={"kernel_crash": {"lines": ["x\0" * 9000] * 3}})
    text = kcidb.log_excerpt(huge)
    assert len(text) == kcidb.LOG_EXCERPT_MAX and "\0" not in text
    assert kcidb.log_excerpt(cell(verdict="PASS")) is None
    assert kcidb.log_excerpt(cell(verdict="SKIP", reason="runs on local")) == "runs on local\n"
    LATEST.validate_exactly(kcidb.report([part([huge])], ORIGIN))


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=12)


@given(id=text.filter(bool), variant=text, profile=text.filter(bool),
       transport=text.filter(bool))
def test_any_cell_has_a_valid_path(id, variant, profile, transport):
    path = kcidb.cell_path(cell(id=id, variant=variant, profile=profile, transport=transport))
    assert PATH_RE.fullmatch(path), path
    parts = path.split(".")
    assert parts[0] == "nfsconf" and len(parts) == (5 if variant else 4)
    # what needs no change is kept as it is
    for raw, got in zip([id, variant, profile, transport] if variant else
                        [id, profile, transport], parts[1:], strict=True):
        if re.fullmatch(r"[A-Za-z0-9_-]+", raw):
            assert got == raw


def test_paths_read_as_the_matrix_does():
    assert kcidb.cell_path(cell()) == "nfsconf.DEC-COLD.file.bindfs.local"
    assert kcidb.cell_path(cell(id="DEC-WARM", variant="")) == "nfsconf.DEC-WARM.bindfs.local"
    assert kcidb.cell_path(cell(id="PYNFS-PUTFH1r", variant="4.1", transport="knfsd")) == \
        "nfsconf.PYNFS-PUTFH1r.4_1.bindfs.knfsd"
    assert kcidb.cell_path(cell(profile="/etc/x/my.toml")) == \
        "nfsconf.DEC-COLD.file._etc_x_my_toml.local"


@pytest.mark.parametrize("origin", [None, "", "My-CI", "a:b", "ci.example", "ci space"])
def test_bad_origins_are_one_line(origin):
    with pytest.raises(UsageError) as e:
        kcidb.check_origin(origin)
    assert "\n" not in str(e.value) and "--kcidb-origin" in str(e.value)
    if origin:
        with pytest.raises(UsageError):
            kcidb.report([part([cell()])], origin)


cells = st.builds(
    cell, id=st.sampled_from(["DEC-COLD", "DEC-WARM", "ENC-TYPE", "PYNFS-PUTFH1r"]),
    variant=st.sampled_from(["", "file", "dir", "4.1"]),
    profile=st.sampled_from(["bindfs", "ref-lh", "squashfuse"]),
    transport=st.sampled_from(["local", "knfsd", "knfsd-subtree"]),
    verdict=st.sampled_from(VERDICTS), reason=text, errno=st.sampled_from([None, "ESTALE"]),
    duration=st.floats(0, 1e4), level=st.sampled_from(["MUST", "SHOULD"]))
kernels = st.sampled_from([
    env(),  # the host's Debian kernel (uname -v names the package)
    env(kernel="6.18.44", started="2026-01-03T00:00:00+00:00"),
    env(kernel="6.1.176", sha256="cd" * 32, engine="uml")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(kernels, st.lists(cells, max_size=8)), min_size=1, max_size=4))
def test_any_runs_give_a_valid_linked_report(runs):
    parts, seen = [], set()
    for e, results in runs:  # merging refuses a cell twice on one kernel
        unique = {}
        for r in results:
            key = (e["kernel"], r.row, r.profile, r.transport)
            if key not in seen:
                seen.add(key)
                unique[key] = r
        parts.append(part(list(unique.values()), e))
    data = kcidb.report(parts, ORIGIN)
    LATEST.validate_exactly(data)
    checkouts = {c["id"] for c in data["checkouts"]}
    builds = {b["id"]: b for b in data["builds"]}
    assert len(checkouts) == len(data["checkouts"]) and len(builds) == len(data["builds"])
    assert all(b["checkout_id"] in checkouts for b in builds.values())
    every = [(p, r) for p in parts for r in p.run.results]
    assert len(data["tests"]) == len(every)
    assert len({t["id"] for t in data["tests"]}) == len(every)
    # round trip: each test names its cell, its verdict and its kernel's build
    by_cell = {}
    for p, r in every:
        key = (p.run.env["kernel"], p.run.env["started"], r.id, r.variant, r.profile,
               r.transport)
        by_cell.setdefault(key, []).append(r)
    for t in data["tests"]:
        assert t["id"].startswith(ORIGIN + ":") and t["origin"] == ORIGIN
        release = builds[t["build_id"]]["misc"]["release"]
        m = t["misc"]
        key = (release, t["start_time"], m["scenario"], m["variant"],
               t["environment"]["misc"]["fuse_server"], t["environment"]["misc"]["transport"])
        (r,) = by_cell[key]
        assert t["status"] == r.verdict == m["verdict"] and t["duration"] == r.duration
        assert t["path"] == kcidb.cell_path(r)


def test_shards_of_one_kernel_share_its_checkout_and_build():
    one = part([cell(variant="file")], env(started="2026-01-02T03:04:05+00:00"))
    two = part([cell(variant="dir")], env(started="2026-01-02T03:04:09+00:00"))
    data = kcidb.report([one, two], ORIGIN)
    assert len(data["checkouts"]) == 1 and len(data["builds"]) == 1
    (build,) = data["builds"]
    assert {t["build_id"] for t in data["tests"]} == {build["id"]}
    (checkout,) = data["checkouts"]
    # the host's Debian kernel: the package its uname -v names
    assert checkout["misc"]["package"] == "linux-image-6.1.0-57-amd64"
    assert checkout["misc"]["package_version"] == "6.1.192-3"


# --- what gather finds beside a kernel image ------------------------------------------------


def _tree(tmp_path: Path, patches: dict[str, bytes]) -> tuple[Path, dict]:
    series = tmp_path / "series"
    series.mkdir()
    for name, data in patches.items():
        (series / name).write_bytes(data)
    from nfsconf.series import read_series, series_hash

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "linux").write_bytes(b"\x7fELF image")
    (tree / "build.log").write_text("".join(f"  CC  f{i}.o\n" for i in range(100)) +
                                    "  LINK linux\n")
    record = {"base": "debian:sid", "arch": "um", "source_package": "linux-source-7.2",
              "source_version": "7.2.13-1", "series": sorted(patches),
              "series_path": str(series), "series_sha256": series_hash(read_series(series)),
              "config_sha256": "c" * 64, "config_fragment": "", "release": "7.2.13-x",
              "build_seconds": 460.4, "jobs": 2, "nfsconf": "0.1.0"}
    (tree / "nfsconf-build.json").write_text(json.dumps(record))
    return tree, record


def test_a_built_tree_gives_its_recipe_and_kcidb_patchset_hash(tmp_path):
    patches = {"0001-a.patch": b"diff a\n", "0002-b.patch": b"diff b\n"}
    tree, record = _tree(tmp_path, patches)
    e = env(kernel="7.2.13-x", path=str(tree / "linux"), sha256="ef" * 32, engine="uml")
    facts = kcidb.gather(e)
    assert facts.build_record == record and facts.tree == str(tree)
    assert facts.build_log.splitlines()[-1] == "  LINK linux"
    assert len(facts.build_log.splitlines()) == kcidb.BUILD_LOG_LINES
    # the schema's recipe: sha256sum *.patch | cut -c-64 | sha256sum
    listing = "".join(hashlib.sha256(d).hexdigest() + "\n" for _, d in sorted(patches.items()))
    assert facts.patchset_hash == hashlib.sha256(listing.encode()).hexdigest()
    data = kcidb.report([part([cell()], e, facts)], ORIGIN)
    LATEST.validate_exactly(data)
    (checkout,), (build,) = data["checkouts"], data["builds"]
    assert checkout["patchset_hash"] == facts.patchset_hash
    assert checkout["misc"]["series"] == sorted(patches)
    assert build["checkout_id"] == checkout["id"] and build["architecture"] == "um"
    assert build["duration"] == 460.4 and build["status"] == "PASS"
    assert build["misc"]["config_sha256"] == "c" * 64
    assert "--series " + str(tmp_path / "series") in build["command"]
    # a series changed since the build: not the patches it applied, no hash claimed
    (tmp_path / "series" / "0002-b.patch").write_bytes(b"diff B\n")
    assert kcidb.gather(e).patchset_hash is None
    # another build in the same place (another release): not this run's record
    assert kcidb.gather(dict(e, kernel="7.2.14")).build_record is None


def test_a_debian_package_from_the_cache(tmp_path):
    image = tmp_path / "user-mode-linux_6.1um4+b13" / "root/usr/bin/linux.uml"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"uml")
    meta = {"source": "debian bookworm: user-mode-linux 6.1um4+b13", "sha256": "12" * 32}
    (tmp_path / "user-mode-linux_6.1um4+b13" / "kernel.json").write_text(json.dumps(meta))
    e = env(kernel="6.1.176", path=str(image), sha256="12" * 32, engine="uml")
    e["kernel_version"] = "#1 Sat Jul  4 15:38:16 UTC 2026"
    facts = kcidb.gather(e)
    assert facts.package == {"suite": "bookworm", "name": "user-mode-linux",
                             "version": "6.1um4+b13"}
    data = kcidb.report([part([cell()], e, facts)], ORIGIN)
    assert data["checkouts"][0]["id"] == f"{ORIGIN}:user-mode-linux_6.1um4+b13"
    assert data["builds"][0]["architecture"] == "um"
    # a cache entry of another image is not this kernel's
    assert kcidb.gather(dict(e, kernel_image=dict(e["kernel_image"], sha256="34" * 32))) == \
        kcidb.KernelFacts()


# --- docs/ci.md -------------------------------------------------------------------------------


def test_ci_docs_kcidb_commands_parse():
    text = (ROOT / "docs/ci.md").read_text()
    lines = [ln.strip() for ln in text.splitlines() if "--format kcidb" in ln and
             ln.strip().startswith("nfsconf")]
    assert lines, "docs/ci.md shows no `nfsconf report --format kcidb` line"
    for line in lines:
        words = shlex.split(line.rstrip("\\"), comments=True)
        args = build_parser().parse_args(words[1:])
        kcidb.check_origin(args.kcidb_origin)


# --- real runs --------------------------------------------------------------------------------


def _report(dirs: list[Path], out: Path, *extra: str) -> dict:
    r = nfsconf("report", *map(str, dirs), "--format", "kcidb", "--kcidb-origin", ORIGIN,
                "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr
    assert str(out / "kcidb.json") in r.stdout
    data = json.loads((out / "kcidb.json").read_text())
    LATEST.validate_exactly(data)  # the command validates; so does the test, independently
    assert data["version"] == {"major": LATEST.major, "minor": LATEST.minor}
    return data


def _tests_match_runs(data: dict, runs: list) -> dict[str, dict]:
    """Each cell of each run is one test on the build of its own kernel; returns the builds
    by kernel release."""
    checkouts = {c["id"] for c in data["checkouts"]}
    builds = {b["id"]: b for b in data["builds"]}
    assert all(b["checkout_id"] in checkouts for b in builds.values())
    by_release = {b["misc"]["release"]: b for b in builds.values()}
    tests = {(t["build_id"], t["path"]): t for t in data["tests"]}
    assert len(tests) == len(data["tests"]) == sum(len(run.results) for run in runs)
    for run in runs:
        build = by_release[run.env["kernel"]]
        for r in run.results:
            t = tests[(build["id"], kcidb.cell_path(r))]
            assert t["status"] == kcidb.STATUSES[r.verdict] and t["misc"]["verdict"] == r.verdict
            assert t["start_time"] == run.env["started"] and t["duration"] == r.duration
            assert t["environment"]["misc"]["fuse_server"] == r.profile
            assert t["environment"]["misc"]["fuse_server_version"] == \
                run.env["profiles"][r.profile]
            assert t["environment"]["misc"]["transport"] == r.transport
            assert t["id"].startswith(ORIGIN + ":") and t["origin"] == ORIGIN
            if r.verdict != "PASS":
                assert r.reason.splitlines()[0] in t["log_excerpt"]
    return by_release


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    r = nfsconf("run", "--profile", "bindfs", "-k", "DEC-WARM or ENC-TYPE", "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


@AS_ROOT
@needs("bindfs", "bindfs")
def test_local_run(local_run, tmp_path):
    data = _report([local_run], tmp_path)
    run = load_run(local_run)
    assert run.results
    (checkout,), (build,) = data["checkouts"], data["builds"]
    assert build["checkout_id"] == checkout["id"]
    assert build["misc"]["release"] == run.env["kernel"]
    _tests_match_runs(data, [run])


@AS_ROOT
@needs("bindfs", "bindfs")
def test_cli_refusals(local_run, tmp_path):
    for extra, words in (([], "needs --kcidb-origin"),
                         (["--kcidb-origin", "Nfsconf-CI"], "lowercase letters"),
                         (["--kcidb-origin", "ci:1"], "lowercase letters")):
        r = nfsconf("report", str(local_run), "--format", "kcidb", "--out", str(tmp_path),
                    *extra)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = nfsconf("report", str(local_run), "--kcidb-origin", ORIGIN, "--out", str(tmp_path))
    assert r.returncode == 2 and "--format kcidb" in r.stderr, r.stderr
    assert not (tmp_path / "kcidb.json").exists()


@pytest.fixture(scope="module")
def um_tree():
    assert SERIES.is_dir(), f"{SERIES} is missing: CI clones beside ../shared"
    r = nfsconf("kernel", "build", "--arch", "um", "--base", "debian:sid", "--series",
                str(SERIES), timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.mark.vm
@AS_ROOT
@needs("bindfs", "bindfs")
def test_knfsd_two_kernels(um_tree, tmp_path):
    out = tmp_path / "run"
    r = nfsconf("run", "--transport", "knfsd", "--kernel", "uml:debian", "--kernel",
                str(um_tree), "--jobs", "2", "--profile", "bindfs", "-k",
                "DEC-WARM or ENC-TYPE", "--out", str(out), "--vm-timeout", "600", timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = [load_run(d) for d in sorted(p.parent for p in out.glob("*/results.jsonl"))]
    assert len(runs) == 2
    # several kernels merge as in every view: --allow-mixed says that is the point
    refused = nfsconf("report", str(out), "--format", "kcidb", "--kcidb-origin", ORIGIN,
                      "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "--allow-mixed" in refused.stderr
    data = _report([out], tmp_path / "kcidb", "--allow-mixed")
    assert len(data["checkouts"]) == 2 and len(data["builds"]) == 2
    by_release = _tests_match_runs(data, runs)
    checkouts = {c["id"]: c for c in data["checkouts"]}

    record = json.loads((um_tree / "nfsconf-build.json").read_text())
    built = by_release[record["release"]]
    assert built["architecture"] == "um" and built["status"] == "PASS"
    assert built["duration"] == record["build_seconds"]
    assert built["misc"]["config_sha256"] == record["config_sha256"]
    assert built["log_excerpt"] == "\n".join(
        (um_tree / "build.log").read_text(errors="replace").splitlines()[-40:]) + "\n"
    source = checkouts[built["checkout_id"]]
    assert source["misc"]["source_package"] == record["source_package"]
    assert source["misc"]["source_version"] == record["source_version"]
    assert source["misc"]["series"] == record["series"]
    listing = "".join(hashlib.sha256((SERIES / name).read_bytes()).hexdigest() + "\n"
                      for name in record["series"])
    assert source["patchset_hash"] == hashlib.sha256(listing.encode()).hexdigest()

    debian = next(run for run in runs if run.env["kernel"] != record["release"])
    packaged = by_release[debian.env["kernel"]]
    assert packaged["misc"]["sha256"] == debian.env["kernel_image"]["sha256"]
    package = checkouts[packaged["checkout_id"]]
    assert package["misc"]["package"] == "user-mode-linux" and package["patchset_hash"] == ""
    assert package["id"] != source["id"]

    # an expectations file listing what failed on the series' kernel: XFAIL in the views,
    # in KCIDB the status the cell had, the listing in misc
    failed = [x for run in runs for x in run.results
              if x.verdict in ("FAIL", "ERROR") and x.kernel == record["release"]]
    if failed:
        expect = tmp_path / "expect" / record["release"]
        expect.mkdir(parents=True)
        (expect / f"{failed[0].profile}.txt").write_text(f"{failed[0].row}  # known\n")
        listed = _report([out], tmp_path / "kcidb-expect", "--allow-mixed", "--expect",
                         str(tmp_path / "expect"))
        xfail = [t for t in listed["tests"] if t["misc"]["verdict"] == "XFAIL"]
        assert xfail and all(t["status"] in ("FAIL", "ERROR") and
                             t["status"] == t["misc"]["expectation"]["was"] for t in xfail)
        assert {t["misc"]["scenario"] for t in xfail} == {failed[0].id}


def test_report_has_no_placeholder_origin():
    """No default origin: the parser leaves it unset, and the command refuses without it."""
    args = build_parser().parse_args(["report", "x", "--format", "kcidb"])
    assert args.kcidb_origin is None

"""The views of a real run over every installed built-in profile: Markdown, JUnit, terminal,
and the HTML rendered by headless Chromium (DOM and screenshot). Plus the results reader's
refusals, which are pure code."""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsconf.report.html import CSS
from nfsconf.report.kernel import build_id
from nfsconf.report.results import ResultsError, ResultsWriter, load_run, read_results

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")
CHROMIUM = shutil.which("chromium")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def nfsconf(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    # a command server, a read-only image, the reference server with nodeids reused (a
    # WRONG-OBJ on the first screen: REUSE) and without export support (MUST failures from
    # the first row on): every kind of column, verdict and SKIP row, at a fraction of the
    # time of every installed profile
    r = nfsconf("run", "--out", str(out), "--profile", "bindfs", "--profile", "squashfuse",
                "--profile", "ref-volatile", "--profile", "ref-noexport")
    assert r.returncode == 0, r.stderr[-2000:]
    return out, load_run(out), r.stdout


@ROOT
def test_run_writes_every_view(local_run):
    out, run, stdout = local_run
    profiles = set(run.env["profiles"])
    assert len(profiles) >= 2 and len(run.results) >= 30 * len(profiles)
    for name in ("matrix.txt", "report.md", "junit.xml", "report.html"):
        assert (out / name).stat().st_size > 0, name
    # terminal: the matrix printed by the run is the one in matrix.txt
    assert (out / "matrix.txt").read_text().strip() in stdout
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| scenario"))
    assert all(p in header for p in profiles)
    from nfsconf.report.matrix import skip_reason

    # every row is in the matrix, or SKIPs in every column and is named once with its reason
    skip_lines = [line for line in md.splitlines() if line.startswith("- SKIP in every column")]
    for row in {r.row for r in run.results}:
        cells = [r for r in run.results if r.row == row]
        if f"| {row} " in md:
            continue
        assert {r.verdict for r in cells} == {"SKIP"}, row
        why = skip_reason(cells[0])
        assert any(row.split("/")[0] in line and why in line for line in skip_lines), row
    assert run.env["kernel"] in md and run.env["fuse"]["protocol"] in md


@ROOT
def test_junit_one_testcase_per_cell(local_run):
    out, run, _ = local_run
    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(run.results)
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    assert len(by_name) == len(cases)  # every cell distinct
    for r in run.results:
        case = by_name[(f"nfsconf.{r.transport}.{r.profile}", f"{r.row} [{r.level}]")]
        tag = {"FAIL": "failure", "ERROR": "error", "SKIP": "skipped", "XFAIL": "skipped"}
        children = {c.tag for c in case} - {"system-out"}
        assert children == ({tag[r.verdict]} if r.verdict in tag else set()), r.row
        if r.verdict == "FAIL" and r.errno:
            assert case.find("failure").get("type") in (r.errno, "WRONG-OBJ")
    for suite in root.findall("testsuite"):
        fails = sum(1 for c in suite.findall("testcase") if c.find("failure") is not None)
        assert int(suite.get("failures")) == fails


@ROOT
def test_report_command_rebuilds_views_from_results(local_run, tmp_path):
    out, run, _ = local_run
    r = nfsconf("report", str(out), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"kernel         {run.env['kernel']}" in r.stdout
    for name in ("matrix.txt", "report.md", "junit.xml", "report.html"):
        assert (tmp_path / name).read_text() == (out / name).read_text(), name


# -- Chromium ---------------------------------------------------------------------------
def _chromium(profile_dir: Path, *args: str) -> str:
    """Run headless Chromium once; make sure none of its processes outlives the call."""
    cmd = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile_dir}", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              start_new_session=True)
    finally:
        deadline = time.monotonic() + 10
        while (left := _ours(profile_dir)) and time.monotonic() < deadline:
            for p in left:
                p.kill()
            time.sleep(0.1)
    assert not _ours(profile_dir), "chromium processes left running"
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _ours(profile_dir: Path) -> list[psutil.Process]:
    mine = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = p.info["cmdline"] or []
        if p.info["status"] != psutil.STATUS_ZOMBIE and \
                any(str(profile_dir) in a for a in cmdline):
            mine.append(p)
    return mine


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB/RGBA PNG (what Chromium
    writes); enough to count colours without an imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + size
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) *
                                                           (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(b"".join(bytes(line[j:j + 3]) for j in range(0, stride, bpp)))
        prev = line
    return width, height, rows


def _count(rows: list[bytes], rgb: str) -> int:
    colour = bytes.fromhex(rgb)
    return sum(sum(1 for x in range(0, len(row), 3) if row[x:x + 3] == colour) for row in rows)


@ROOT
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                             "(Debian package: chromium)")
def test_html_renders_in_chromium(local_run, tmp_path):
    out, run, _ = local_run
    page = (out / "report.html").as_uri()
    wrong = next(i for i, r in enumerate(run.results)
                 if r.wrong_object and r.handle and r.evidence.get("decodes"))
    dom = _chromium(tmp_path / "chrome", "--dump-dom", f"{page}#c{wrong}")
    # every record is a cell the browser laid out, and the fragment opened that cell's panel
    assert f'data-visible-cells="{len(run.results)}"' in dom
    assert dom.count('<td class="cell ') == len(run.results)
    assert f'data-evidence-shown="c{wrong}"' in dom
    panel = dom[dom.index(f'<section class="ev" id="c{wrong}"'):]
    panel = panel[:panel.index("</section>")]
    r = run.results[wrong]
    assert "WRONG-OBJ" in panel and "nodeid" in panel and "generation" in panel
    assert r.handle["hex"][:8] in panel  # the handle's bytes, grouped by words
    assert ">other<" in panel  # a decode that opened another object

    shot = tmp_path / "report.png"
    _chromium(tmp_path / "chrome2", f"--screenshot={shot}", "--window-size=2800,1500",
              "--hide-scrollbars", page)
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (2800, 1500)
    green, red, dark = (_count(rows, c) for c in ("2e9d4a", "c62828", "5c0000"))
    passes = sum(r.verdict == "PASS" for r in run.results)
    # each visible cell is at least ~90x15 pixels of its colour; the first screen shows most
    assert green > 1000 * passes * 0.4, (green, passes)
    assert dark > 1000, dark  # WRONG-OBJ cells are on the first screen (RESTART rows or above)
    assert "#c62828" in CSS and "#2e9d4a" in CSS and "#5c0000" in CSS
    if any(r.verdict == "FAIL" and r.level == "MUST" and not r.wrong_object
           for r in run.results):
        assert red > 0
    (out / "report.png").write_bytes(shot.read_bytes())


# -- the results reader (pure code) -----------------------------------------------------
def _record(**kw):
    base = {"id": "X", "variant": "", "level": "MUST", "profile": "p", "transport": "local",
            "verdict": "PASS", "kind": "result", "schema": 1}
    return json.dumps({**base, **kw})


def test_other_schema_version_is_refused_with_one_line(tmp_path):
    (tmp_path / "results.jsonl").write_text(
        json.dumps({"kind": "env", "nfsconf": "9.0", "schema": 2}) + "\n" + _record() + "\n")
    r = nfsconf("report", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert "nfsconf 9.0" in r.stderr and "schema 2" in r.stderr and "reads schema 1" in r.stderr
    with pytest.raises(ResultsError, match="not an nfsconf results record"):
        (tmp_path / "x.jsonl").write_text('{"kind": "result"}\n')
        read_results(tmp_path / "x.jsonl")
    r = nfsconf("report", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such results file" in r.stderr


def test_torn_last_line_is_dropped_then_cut_before_appending(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_record(id="A") + "\n" + _record(id="B")[:40])
    assert [r.id for r in read_results(path)[1]] == ["A"]
    w = ResultsWriter(path)
    w.write(json.loads(_record(id="C")))
    w.close()
    assert [r.id for r in read_results(path)[1]] == ["A", "C"]
    path.write_text(_record(id="A")[:40] + "\n" + _record(id="B") + "\n")
    with pytest.raises(ResultsError, match=":1: not JSON"):
        read_results(path)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    return struct.pack("<III", len(name), len(desc), ntype) + _pad(name) + _pad(desc)


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.integers(1, 9),
                          st.binary(max_size=40)), max_size=4),
       st.binary(min_size=1, max_size=64))
def test_build_id_found_among_other_notes(others, ident):
    notes = b"".join(_note(n, t, d) for n, t, d in others if not (t == 3 and
                                                                  n.rstrip(b"\0") == b"GNU"))
    assert build_id(notes + _note(b"GNU\0", 3, ident) + _note(b"Linux\0", 6, b"x")) == ident.hex()
    assert build_id(notes) is None


def test_rows_that_skip_everywhere_for_one_reason_are_said_once():
    from nfsconf.report.matrix import render
    from nfsconf.report.results import Result

    lh = "LOOKUP_HANDLE not negotiated: 7.38 kernel does not offer bit 43"
    cells = [Result("LH-ENC", v, "MUST", p, "local", "SKIP", reason=lh)
             for v in ("file", "dir") for p in ("a", "b")]
    cells += [Result("DEC-WARM", "file", "MUST", "a", "local", "PASS"),
              Result("DEC-WARM", "file", "MUST", "b", "local", "SKIP", reason=lh),
              Result("NFS-FH", "file", "MUST", "a", "local", "SKIP", reason="NFS wire check: x"),
              Result("NFS-FH", "file", "MUST", "b", "local", "SKIP", reason=lh)]
    text = render(cells)
    table = text.split("\n\n")[0]
    # a row with a PASS, or SKIPs for two reasons, stays in the table
    assert "DEC-WARM/file" in table and "NFS-FH/file" in table
    assert "LH-ENC" not in table
    line = next(x for x in text.splitlines() if x.startswith("SKIP in every column"))
    assert "(2 rows: LH-ENC)" in line and "LOOKUP_HANDLE not negotiated" in line
    assert "kernel build --arch um" in line  # the command that would run them
    # the detail after ';' (which profile) does not split a reason in two
    ref = "needs the reference server (restart without unmount, hostile modes); profile"
    text = render([Result("LIVE-RESTART", "file", "MUST", p, "local", "SKIP",
                          reason=f"{ref} {p} is {p}") for p in ("a", "b")])
    line = next(x for x in text.splitlines() if x.startswith("SKIP in every column"))
    assert "(1 row: LIVE-RESTART)" in line and "--profile ref-stable" in line
    # a profile without [restart]: one reason for every such profile, and what to do
    why = "no restart without unmount: profile {} declares no [restart] command"
    text = render([Result("IN-FLIGHT", "sigkill", "MUST", p, "local", "SKIP",
                          reason=why.format(p)) for p in ("a", "b")])
    line = next(x for x in text.splitlines() if x.startswith("SKIP in every column"))
    assert "(1 row: IN-FLIGHT): no restart without unmount;" in line and "[restart]" in line

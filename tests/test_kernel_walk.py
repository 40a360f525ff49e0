"""`nfsconf kernel walk` on a real kernel (User-Mode Linux, built from Debian sid's source):
the base, then a patch of the LOOKUP_HANDLE series, a patch that does not apply and one that
does not build (tests/data/walk-series), each its own row; the steps that built run the
selection in their own run directory, which the reports take like any other."""

import json
import shutil
import time
from pathlib import Path

import pytest
from nfsconf_cli import AS_ROOT, SHARED, engine_processes, nfsconf

from nfsconf.report.results import load_run

DATA = Path(__file__).parent / "data" / "walk-series"
FIRST = sorted((SHARED / "kernels/lookup-handle-v2/series").glob("0001-*.patch"))[0]

pytestmark = [pytest.mark.vm, AS_ROOT]


def test_walk_rows_each_patch_with_its_verdicts_or_its_error(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(FIRST, series / FIRST.name)  # the series' own first patch, read in place
    for p in DATA.glob("*.patch"):
        shutil.copy(p, series / p.name)
    out = tmp_path / "walk"
    started = time.time()
    r = nfsconf("kernel", "walk", "--arch", "um", "--series", str(series), "--profile",
                "ref-stable", "-k", "ENC-TYPE or COMPAT-LOOKUP", "--out", str(out),
                timeout=3600)
    # a patch that did not apply or build: exit 1, every step still in the table
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    steps = json.loads((out / "walk.json").read_text())
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    base, first, bad_apply, bad_build = steps
    assert base["patch"] == "(base)" and first["patch"] == FIRST.name
    assert bad_apply["error"].startswith("does not apply") and \
        "patch does not apply" in bad_apply["error"] and bad_apply["run"] is None
    assert bad_build["error"].startswith("does not build") and \
        "nfsconf walk test: this step does not build" in bad_build["error"]
    # the two kernels that built ran, each a run directory of its own kernel
    runs = [load_run(s["run"]) for s in (base, first)]
    assert [run.env["kernel"] for run in runs] == [base["release"], first["release"]]
    assert base["release"] != first["release"]
    for run in runs:
        assert {x.id for x in run.results} == {"ENC-TYPE", "COMPAT-LOOKUP"}
        assert all(x.verdict != "ERROR" for x in run.results), run.results
    # patch 1 only reorders an argument index: no verdict changes, and the table says so
    assert first["changes"] == []
    table = (out / "walk.md").read_text()
    assert "no verdict changed" in table and "nfsconf walk test" in table
    # a second walk over the same patches finds every kernel that built in the cache
    again = nfsconf("kernel", "walk", "--arch", "um", "--series", str(series), "--profile",
                    "ref-stable", "-k", "ENC-TYPE", "--out", str(tmp_path / "again"),
                    timeout=3600)
    assert again.returncode == 1
    assert "built in" not in again.stderr, again.stderr[-2000:]
    assert engine_processes(started) == []

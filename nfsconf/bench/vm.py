"""`nfsconf bench vm`: where the time of a knfsd lane goes, against the anchor measured in
the same run: the same kernel booted to a shell under the same qemu, running `true`.

The lane run is `nfsconf run --transport knfsd` as users run it. Its vm.jsonl gives the
host's view (boot to the guest command, first result, the whole VM), its guest log the
guest's own marks (seconds of guest uptime: the shell, the Python packs unpacked, Python
up, knfsd ready, the scenarios starting), its results the time of each cell in the guest.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from nfsconf.bench import run_nfsconf
from nfsconf.report.results import load_run

MARKS = ("shell", "unpacked", "python", "knfsd", "run")


def bare_boot(kernel_spec: str | None) -> dict[str, float]:
    """Boot to a shell and run `true`: what no lane can do faster."""
    from nfsconf.vm.kernels import default_cache_dir, resolve_kernel
    from nfsconf.vm.runner import run_in_vm

    kernel = resolve_kernel(kernel_spec, default_cache_dir())
    r = run_in_vm(kernel, ["true"], timeout=600, memory="2G")
    return {"boot": round(r.boot_seconds or 0.0, 2), "total": round(r.duration, 2)}


def lane_run(out: Path, kernel_spec: str | None, profiles: list[str], k: str | None
             ) -> dict[str, Any]:
    seconds = run_nfsconf(out, ["--transport", "knfsd",
                                *(["--kernel", kernel_spec] if kernel_spec else [])],
                          profiles, k)
    boot = json.loads((out / "vm.jsonl").read_text().splitlines()[0])
    cells = [x.duration for x in load_run(out).results if x.verdict != "SKIP"]
    return {"seconds": round(seconds, 2), "boot": boot["boot_seconds"],
            "first_result": boot.get("first_result"), "vm": boot["seconds"],
            "guest_marks": boot.get("guest_marks") or {}, "cells": len(cells),
            "cell_median": round(statistics.median(cells), 2) if cells else None,
            "cell_mean": round(statistics.fmean(cells), 2) if cells else None}


def vm_bench(out: Path, kernel_spec: str | None, profiles: list[str], k: str | None
             ) -> dict[str, Any]:
    anchor = bare_boot(kernel_spec)
    print(f"anchor: boot to a shell {anchor['boot']:.1f} s, VM {anchor['total']:.1f} s",
          flush=True)
    lane = lane_run(out / "run", kernel_spec, profiles, k)
    print(f"lane: first result {lane['first_result']} s, VM {lane['vm']} s", flush=True)
    base = anchor["boot"] or 1.0
    ratios = {"boot": lane["boot"] / base if lane["boot"] else None,
              "first_result": lane["first_result"] / base if lane["first_result"] else None}
    return {"anchor": "bare boot to a shell", "bare": anchor, "lane": lane,
            "ratio_to_anchor": {k: round(v, 2) for k, v in ratios.items() if v is not None}}


def render(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    bare, lane = result["bare"], result["lane"]
    base = bare["boot"] or 1.0
    rows = [["bare boot to a shell (anchor)", f"{bare['boot']:.1f}", "1.00"],
            ["lane: boot to the guest command", f"{lane['boot']:.1f}",
             f"{lane['boot'] / base:.2f}"]]
    marks = lane["guest_marks"]
    prev = None
    for m in MARKS:
        if m in marks:
            step = f" (+{marks[m] - marks[prev]:.1f})" if prev in marks else ""
            rows.append([f"guest uptime at {m}{step}", f"{marks[m]:.1f}", ""])
            prev = m
    steps = {k.split(":", 1)[1]: v for k, v in marks.items() if k.startswith("knfsd:")}
    if steps:
        rows.append(["knfsd start: " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()),
                     f"{sum(steps.values()):.1f}", ""])
    if lane["first_result"] is not None:
        rows.append(["lane: first result", f"{lane['first_result']:.1f}",
                     f"{lane['first_result'] / base:.2f}"])
    rows.append(["lane: the whole VM", f"{lane['vm']:.1f}", f"{lane['vm'] / base:.2f}"])
    if lane["cell_median"] is not None:
        rows.append([f"a cell in the guest (median of {lane['cells']})",
                     f"{lane['cell_median']:.2f}", ""])
    return tabulate(rows, ["", "seconds", "ratio to anchor"], disable_numparse=True)

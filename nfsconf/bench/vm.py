"""`nfsconf bench vm`: the same knfsd lane on both kernel engines in one invocation — qemu
under TCG (the anchor) and User-Mode Linux — each figure beside its qemu counterpart, with
the ratio (how many times faster UML is).

Each lane run is `nfsconf run --transport knfsd` as users run it. Its vm.jsonl gives the
host's view (boot to the guest command, first result, the whole VM), its guest log the
guest's own marks (seconds of guest uptime: the shell, Python up, knfsd ready, the
scenarios starting), its results the time of each cell in the guest. Each engine's bare
boot (to a shell running `true`) is measured too: what no lane can do faster.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from nfsconf.bench import run_nfsconf
from nfsconf.report.results import load_run

MARKS = ("shell", "unpacked", "python", "pseudo-root", "run", "knfsd")
ENGINES = ("qemu", "uml")  # the anchor first
DEFAULT_SPECS = {"qemu": "debian:bookworm", "uml": "uml:debian"}


def bare_boot(kernel_spec: str | None) -> dict[str, float]:
    """Boot to a shell and run `true`."""
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
    results = load_run(out).results
    cells = [x.duration for x in results if x.verdict != "SKIP"]
    return {"seconds": round(seconds, 2), "boot": boot["boot_seconds"],
            "engine": boot.get("engine"),
            "first_result": boot.get("first_result"), "vm": boot["seconds"],
            "guest_marks": boot.get("guest_marks") or {}, "cells": len(cells),
            "verdicts": {f"{x.id}/{x.variant} {x.profile} [{x.transport}]": x.verdict
                         for x in results},
            "cell_median": round(statistics.median(cells), 2) if cells else None,
            "cell_mean": round(statistics.fmean(cells), 2) if cells else None}


def vm_bench(out: Path, specs: dict[str, str | None], profiles: list[str], k: str | None
             ) -> dict[str, Any]:
    """SPECS: engine -> kernel spec, for the engines to measure (qemu is the anchor)."""
    runs: dict[str, dict[str, Any]] = {}
    for engine in ENGINES:
        if engine not in specs:
            continue
        bare = bare_boot(specs[engine])
        print(f"{engine}: boot to a shell {bare['boot']:.1f} s, VM {bare['total']:.1f} s",
              flush=True)
        lane = lane_run(out / engine, specs[engine], profiles, k)
        print(f"{engine}: lane first result {lane['first_result']} s, VM {lane['vm']} s, "
              f"run {lane['seconds']} s", flush=True)
        runs[engine] = {"kernel": specs[engine], "bare": bare, "lane": lane}
    result: dict[str, Any] = {"anchor": "qemu", "engines": runs}
    if "qemu" in runs and "uml" in runs:
        result["speedup"] = {name: round(q / u, 2) for name, (q, u) in _pairs(runs).items()
                             if q and u}
        a, b = runs["qemu"]["lane"]["verdicts"], runs["uml"]["lane"]["verdicts"]
        result["verdicts_differ"] = sorted(c for c in a.keys() | b.keys() if a.get(c) != b.get(c))
    return result


def _pairs(runs: dict[str, dict[str, Any]]) -> dict[str, tuple[float | None, float | None]]:
    def figures(r: dict[str, Any]) -> dict[str, float | None]:
        lane = r["lane"]
        return {"bare boot": r["bare"]["boot"], "lane boot": lane["boot"],
                "first result": lane["first_result"], "whole VM": lane["vm"],
                "whole run": lane["seconds"], "cell median": lane["cell_median"]}

    q, u = figures(runs["qemu"]), figures(runs["uml"])
    return {name: (q[name], u[name]) for name in q}


def render(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    runs = result["engines"]
    if "speedup" not in result:  # one engine: its figures alone
        (engine, r), = runs.items()
        rows = [[name, _s(v)] for name, v in [
            ("bare boot to a shell", r["bare"]["boot"]), ("lane boot", r["lane"]["boot"]),
            ("first result", r["lane"]["first_result"]), ("whole VM", r["lane"]["vm"]),
            ("whole run", r["lane"]["seconds"]), ("cell median", r["lane"]["cell_median"])]]
        rows += _marks(r["lane"]["guest_marks"])
        return tabulate(rows, ["", f"{engine} seconds"], disable_numparse=True)
    rows = [[name, _s(q), _s(u), f"{q / u:.2f}x" if q and u else ""]
            for name, (q, u) in _pairs(runs).items()]
    qm, um = runs["qemu"]["lane"]["guest_marks"], runs["uml"]["lane"]["guest_marks"]
    for m in MARKS:
        if m in qm or m in um:
            rows.append([f"guest uptime at {m}", _s(qm.get(m)), _s(um.get(m)), ""])
    table = tabulate(rows, ["", "qemu s (anchor)", "uml s", "speed-up (ratio)"],
                     disable_numparse=True)
    differ = result["verdicts_differ"]
    cells = runs["qemu"]["lane"]["cells"]
    return table + (f"\nverdicts: {len(differ)} cells differ between the engines: "
                    + ", ".join(differ[:10]) if differ else
                    f"\nverdicts: the same on both engines ({cells} cells run)")


def _marks(marks: dict[str, float]) -> list[list[str]]:
    return [[f"guest uptime at {m}", _s(marks[m])] for m in MARKS if m in marks]


def _s(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"

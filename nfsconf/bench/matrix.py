"""`nfsconf bench matrix`: how fast the local matrix runs, and where its time goes.

The same matrix runs twice, as users run it (`nfsconf run`, a child process each): at
`--jobs 1`, the default and the anchor, and at `--jobs N`. Each gives cells per second;
the anchor's results give the time of every cell by phase (the labs' `timings`: mount,
set-up, drop_caches, encode, decode, unmount; the rest is the scenarios' own work), by
profile. The two runs' verdicts are compared cell by cell: parallel cells share the kernel's
caches, so a verdict that depends on them may differ, and the bench says which.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfsconf.bench import run_nfsconf
from nfsconf.report.results import Result, load_run

PHASES = ("mount", "setup", "drop_caches", "encode", "decode", "unmount")


@dataclass
class MatrixRun:
    jobs: int
    seconds: float  # the whole `nfsconf run`, start to exit
    results: list[Result] = field(default_factory=list)

    @property
    def cells_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds else 0.0


def run_matrix(out: Path, jobs: int, profiles: list[str], k: str | None) -> MatrixRun:
    seconds = run_nfsconf(out, ["--jobs", str(jobs)], profiles, k)
    return MatrixRun(jobs, seconds, load_run(out).results)


def breakdown(results: list[Result]) -> dict[str, dict[str, float]]:
    """profile -> phase -> seconds, plus `cells`, `total` (the cells' durations) and
    `scenario` (what no phase accounts for)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in results:
        row = out[r.profile]
        row["cells"] += 1
        row["total"] += r.duration
        timings = r.evidence.get("timings") or {}
        for phase in PHASES:
            row[phase] += float(timings.get(phase, 0.0))
    for row in out.values():
        row["scenario"] = max(0.0, row["total"] - sum(row[p] for p in PHASES))
    return {p: dict(v) for p, v in out.items()}


def differing(a: list[Result], b: list[Result]) -> list[tuple[str, str, str, str]]:
    """(row, profile, verdict in A, verdict in B) of every cell whose verdict differs."""
    va = {(r.row, r.profile, r.transport): r.verdict for r in a}
    out = []
    for r in b:
        before = va.get((r.row, r.profile, r.transport))
        if before is not None and before != r.verdict:
            out.append((r.row, r.profile, before, r.verdict))
    return out


def matrix_bench(out: Path, profiles: list[str], k: str | None, jobs: int) -> dict[str, Any]:
    anchor = run_matrix(out / "jobs-1", 1, profiles, k)
    print(f"--jobs 1: {len(anchor.results)} cells in {anchor.seconds:.1f} s", flush=True)
    parallel = run_matrix(out / f"jobs-{jobs}", jobs, profiles, k)
    print(f"--jobs {jobs}: {len(parallel.results)} cells in {parallel.seconds:.1f} s",
          flush=True)
    return {
        "anchor": "--jobs 1",
        "runs": {str(x.jobs): {"seconds": round(x.seconds, 2), "cells": len(x.results),
                               "cells_per_second": round(x.cells_per_second, 2)}
                 for x in (anchor, parallel)},
        "ratio_to_anchor": round(parallel.cells_per_second / anchor.cells_per_second, 3)
        if anchor.cells_per_second else None,
        "breakdown": breakdown(anchor.results),
        "verdicts_differing": [list(x) for x in differing(anchor.results, parallel.results)],
        "verdicts": dict(Counter(r.verdict for r in anchor.results)),
        "cores": os.cpu_count(),
    }


def render(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    runs = [[f"--jobs {j}", r["cells"], f"{r['seconds']:.1f}", f"{r['cells_per_second']:.1f}",
             "1.00" if j == "1" else f"{result['ratio_to_anchor']:.2f}"]
            for j, r in result["runs"].items()]
    out = [tabulate(runs, ["run", "cells", "seconds", "cells/s", "ratio to --jobs 1"],
                    disable_numparse=True), ""]
    rows = []
    for profile, b in sorted(result["breakdown"].items(), key=lambda x: -x[1]["total"]):
        rows.append([profile, int(b["cells"]), f"{b['total']:.1f}",
                     *(f"{b[p]:.1f}" for p in (*PHASES, "scenario"))])
    total = {p: sum(b[p] for b in result["breakdown"].values())
             for p in ("total", *PHASES, "scenario")}
    rows.append(["(all)", sum(int(b["cells"]) for b in result["breakdown"].values()),
                 f"{total['total']:.1f}", *(f"{total[p]:.1f}" for p in (*PHASES, "scenario"))])
    out.append("where the time of --jobs 1 goes (seconds):")
    out.append(tabulate(rows, ["profile", "cells", "total", *PHASES, "scenario"],
                        disable_numparse=True))
    diff = result["verdicts_differing"]
    out.append("")
    out.append(f"verdicts differing between the runs: {len(diff)}" + "".join(
        f"\n  {row} {profile}: {a} -> {b}" for row, profile, a, b in diff))
    return "\n".join(out)

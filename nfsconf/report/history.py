"""The runs a results tree holds, by kernel build: `nfsconf history DIR` lists them, and
`nfsconf diff --last DIR` compares the newest with the one before it that ran the same
profiles on the same transport — the regression report of a kernel build, one command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from nfsconf.errors import ResultsError
from nfsconf.report.results import Run, load_runs


@dataclass
class Entry:
    path: Path
    started: str
    kernel: str
    build: str  # build-id or image sha256, shortened
    transport: str
    profiles: tuple[str, ...]
    cells: int
    must_failed: int
    engine: str = "host"  # host | qemu | uml: a regression report compares like with like


    @property
    def key(self) -> tuple[str, tuple[str, ...], str]:
        """What makes two runs comparable: the same transport, the same profiles, the same
        kernel engine."""
        return self.transport, self.profiles, self.engine


def entry(run: Run) -> Entry:
    env = run.env
    image = env.get("kernel_image") or {}
    build = str(image.get("build_id") or image.get("sha256") or "")[:12]
    profiles = tuple(sorted({r.profile for r in run.results}))
    must = sum(1 for r in run.results if r.must and r.verdict in ("FAIL", "ERROR"))
    return Entry(run.path.parent, str(env.get("started", "?")), str(env.get("kernel", "?")),
                 build, str(env.get("transport", "?")), profiles, len(run.results), must,
                 str(image.get("engine") or "host"))


def entries(where: str | Path) -> list[Entry]:
    """Every run under WHERE, oldest first (by the time it started). Each directory right
    below WHERE is one run, merged when it holds several run directories (the shards and
    kernels one CI pipeline made); WHERE itself may be a single run."""
    top = Path(where)
    if (top / "results.jsonl").is_file():
        parts = [top]
    else:
        parts = sorted(p for p in top.iterdir() if p.is_dir()) if top.is_dir() else []
    out = []
    for part in parts:
        try:
            run = load_runs([part], allow_mixed=True)
        except ResultsError:
            continue  # a foreign or broken directory is not a run of this history
        e = entry(run)
        e.path = part
        out.append(e)
    if not out:
        raise ResultsError(f"{where}: no runs")
    return sorted(out, key=lambda e: e.started)


def render(items: list[Entry]) -> str:
    rows = [[e.started, e.kernel, e.engine, e.build, e.transport, len(e.profiles), e.cells,
             e.must_failed, str(e.path)] for e in items]
    return tabulate(rows, ["started", "kernel", "engine", "build", "transport", "profiles",
                           "cells", "MUST failed", "run"])


def last_two(where: str | Path) -> tuple[Entry, Entry]:
    """The newest run and the newest before it with the same transport and profiles."""
    items = entries(where)
    if not items:
        raise ResultsError(f"{where}: no runs")
    newest = items[-1]
    earlier = [e for e in items[:-1] if e.key == newest.key]
    if not earlier:
        raise ResultsError(f"{where}: no earlier run of the same profiles on "
                           f"{newest.transport} ({newest.engine}) to compare {newest.path} "
                           "with")
    return earlier[-1], newest

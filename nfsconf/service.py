"""The run service: `run(RunOptions)` runs a suite and returns its outcome and directory.

`nfsconf run` and `nfsconf certify` call it. The local and Ganesha transports run here
(run.run_here); the knfsd transport boots the kernel under test and runs the same suite in
the guest (vm/lane.py), which calls run_here there.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from nfsconf import claims, plan
from nfsconf.errors import NfsconfError, UsageError
from nfsconf.plan import RunOptions
from nfsconf.run import INCOMPLETE, RunOutcome, default_out, report_incomplete, run_here

if TYPE_CHECKING:
    from nfsconf.vm.walk import WalkRequest


def run(opts: RunOptions) -> RunOutcome:
    """Validate the plan, then run it: here (local, ganesha), in one guest booted with the
    kernel under test (knfsd), or in several guests (several kernels, or one kernel's
    matrix split over --jobs guests)."""
    plan.validate(opts)
    if opts.pynfs:
        from nfsconf.pynfs import prepare

        # built once on the host: every guest sees the built tree
        opts = dataclasses.replace(opts, pynfs=str(prepare(Path(opts.pynfs))))
    return _execute(opts)


def _execute(opts: RunOptions) -> RunOutcome:
    if opts.transport != "knfsd":
        return run_here(opts)
    guests = opts.jobs or 1
    if opts.resume and opts.jobs is None:
        guests = shard_dirs(opts.resume) or 1  # as many guests as the run had
    if len(opts.kernels) > 1 or guests > 1:
        return run_kernels(opts, list(opts.kernels) or [None], guests)
    from nfsconf.vm.lane import run_lane

    return run_lane(opts)


def kernel_slug(spec: str) -> str:
    """A directory name for a kernel spec: debian:sid -> debian-sid, a tree -> its name."""
    name = Path(spec).name if "/" in spec else spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "kernel"


def shard_dirs(out: Path) -> int:
    """N when OUT holds the guests of one kernel's matrix split N ways (shard-K-of-N), else
    0: what `--resume OUT` must run again."""
    found = {int(m.group(1)) for p in Path(out).glob("shard-*-of-*")
             if (m := re.fullmatch(r"shard-\d+-of-(\d+)", p.name))}
    return found.pop() if len(found) == 1 else 0


def run_kernels(opts: RunOptions, kernels: list[str | None], jobs: int) -> RunOutcome:
    """The same suite on several kernels: one guest per kernel, up to JOBS at a time, each
    run in OUT/<kernel>/; or one kernel's matrix split over JOBS guests (UML is one CPU:
    two guests use two), each taking cells as it gets to them (claims.py) and writing
    them in OUT/shard-K-of-N/. One report over all of them in OUT (a column per kernel)."""
    from nfsconf.report.results import load_runs
    from nfsconf.report.views import write_views
    from nfsconf.vm.kernels import default_cache_dir, resolve_kernel
    from nfsconf.vm.lane import run_lane

    out = Path(opts.out or default_out("knfsd"))
    kernel = None
    if len(kernels) > 1:
        slugs = [kernel_slug(k or "debian") for k in kernels]
        if len(set(slugs)) != len(slugs):
            raise UsageError(f"two --kernel values name the same directory: "
                             f"{', '.join(slugs)}")
        one = [dataclasses.replace(opts, kernels=[k] if k else [], out=out / s)
               for k, s in zip(kernels, slugs, strict=True)]
    else:
        # the guests' working directory is not ours: a relative --out is absolute to them
        claims_dir: Path | None = (out / claims.CLAIMS).resolve()
        if opts.resume and not claims_dir.is_dir():
            claims_dir = None  # split by hash (an older nfsconf): each guest its own part
        else:
            claims_dir.mkdir(parents=True, exist_ok=True)
        # with claims, guest K starts at part K of the matrix and goes on round it
        one = [dataclasses.replace(opts, kernels=opts.kernels[:1], claims=claims_dir,
                                   shard=f"{i}/{jobs}", out=out / f"shard-{i}-of-{jobs}")
               for i in range(1, jobs + 1)]
        # once, not once per guest (Debian's package: an apt-cache query of a second)
        kernel = resolve_kernel(opts.kernel, default_cache_dir())
    for o in one:  # resuming: a guest that never wrote anything starts afresh
        o.resume = o.out if opts.resume and (Path(o.out) / "results.jsonl").exists() \
            else None
    pool = ThreadPoolExecutor(max_workers=jobs)
    cancel = threading.Event()
    try:
        outcomes = list(pool.map(
            lambda o: run_lane(o, tag=o.out.name, cancel=cancel, kernel=kernel), one))
    except KeyboardInterrupt:
        cancel.set()  # the lanes' VMs power off; what they recorded stays
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    merged = load_runs([o.out for o in outcomes], allow_mixed=True)
    write_views(merged, out, ("terminal", "markdown", "junit", "html"))
    print("\n" + (out / "matrix.txt").read_text(), end="")
    missing = [m for o in outcomes for m in o.missing]
    status = max((o.exit_status for o in outcomes), default=0)
    untaken = claims.unclaimed(out / claims.CLAIMS) if len(kernels) == 1 else []
    if untaken:  # every guest ended (a kernel crash on its last cell) before these
        missing += untaken
        report_incomplete(untaken, len(claims.plan(out / claims.CLAIMS)), out)
        status = max(status, INCOMPLETE)
    what = f"{len(kernels)} kernels" if len(kernels) > 1 else f"{jobs} guests"
    print(f"\n{what}, {len(merged.results)} results; one report in {out}")
    return RunOutcome(out, merged.results, missing, any(o.interrupted for o in outcomes),
                      status)


def walk(req: WalkRequest, opts: RunOptions, cache_dir: Path) -> int:
    """`nfsconf kernel walk`: each step's kernel (vm/walk.py) runs the selection in
    OUT/NN-<patch>/, a run directory like any other; after each step the table so far, at
    the end OUT/walk.md and OUT/walk.json. Exit 0 when every step built and ran, 1 when a
    patch did not apply or build, 3 when a run ended without every cell it planned."""
    import json

    from nfsconf.report import walk as table
    from nfsconf.report.results import load_run
    from nfsconf.vm.build import main_say
    from nfsconf.vm.walk import walk_kernels

    plan.validate(opts)
    out = Path(opts.out or default_out("walk"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[table.StepRow] = []
    status = 0
    started = time.monotonic()
    for step in walk_kernels(req, cache_dir, say=main_say):
        row = table.StepRow(step.number, step.patch, step.release, step.error)
        rows.append(row)
        if step.kernel is not None:
            run_dir = out / f"{step.number:02d}-{kernel_slug(Path(step.patch).stem)[:40]}"
            try:
                outcome = _execute(dataclasses.replace(opts, transport="knfsd",
                                                       kernels=[str(step.kernel)], out=run_dir))
            except NfsconfError as e:  # a kernel that cannot run the suite is this step's
                row.error = f"the run failed: {e}"  # finding; the walk goes on
                status = max(status, 1)
                table.compare(rows)
                continue
            row.run = str(run_dir)
            row.results = load_run(run_dir).results if (run_dir / "results.jsonl").exists() \
                else []
            if outcome.exit_status == INCOMPLETE:
                status = max(status, INCOMPLETE)
            elif outcome.exit_status == 2:  # the run itself failed: its log says why
                row.error = f"the run failed (exit 2): see {run_dir}"
                status = max(status, 1)
        else:
            status = max(status, 1)
        table.compare(rows)
        print(f"\nkernel walk after step {step.number} "
              f"({time.monotonic() - started:.0f} s):\n{table.terminal(rows)}\n", flush=True)
    (out / "walk.md").write_text(table.markdown(rows))
    (out / "walk.json").write_text(json.dumps([
        {"step": r.number, "patch": r.patch, "release": r.release, "error": r.error,
         "run": r.run, "changes": [dataclasses.asdict(c) for c in r.changes]}
        for r in rows], indent=1) + "\n")
    print(f"kernel walk: {len(rows)} steps in {time.monotonic() - started:.0f} s; "
          f"{out / 'walk.md'}")
    return status

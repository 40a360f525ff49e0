"""Running the suite on this kernel: `run_here(RunOptions)` runs the scenarios under pytest
with the nfsconf plugin and returns where the results are. results.jsonl is written as each
cell ends, the views at the end. The front door is service.run(), which also knows the
knfsd lane (vm/lane.py: the same run inside a VM booted with the kernel under test).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nfsconf
from nfsconf.errors import ResultsError, UsageError
from nfsconf.plan import RunContext, RunOptions
from nfsconf.report.results import PLANNED, Result, ResultsWriter, load_run, read_results

# exit status of a run that ended without every cell it planned (resume it)
INCOMPLETE = 3


@dataclass
class RunOutcome:
    out: Path
    results: list[Result]
    missing: list[str]  # node ids planned but without a record
    interrupted: bool = False
    exit_status: int = 0


def default_out(transport: str) -> Path:
    return Path(f"reports/run-{time.strftime('%Y%m%d-%H%M%S')}-{transport}")


def preflight() -> None:
    if os.geteuid() != 0:
        raise UsageError("nfsconf needs root (mount, drop_caches, open_by_handle_at)")
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing; see `nfsconf doctor`")
    from nfsconf.fuse.control import ensure_bytecode

    ensure_bytecode()  # before the knfsd lane packs the package for the guest


def profiles_of(specs: list[str]) -> list[Any]:
    """The Profile objects of SPECS (all installed built-ins when empty), each installed."""
    from nfsconf.servers.builtin import find_profile, installed_builtins

    profiles = [find_profile(s) for s in specs] if specs else installed_builtins()
    missing = [p for p in profiles if not p.installed()]
    if missing:
        raise UsageError(", ".join(f"profile {p.name}: {p.binary} is not installed"
                                   + (f" (apt-get install {p.package})" if p.package else "")
                                   for p in missing))
    if not profiles:
        raise UsageError("no FUSE server of the built-in profiles is installed; "
                         "see `nfsconf doctor`")
    return profiles


def take_resumed(opts: RunOptions, check_kernel: bool = True) -> None:
    """Resuming: the profiles and -k the run started with (unless given again), and a check
    that this is the kernel build and transport it ran on: one results file, one kernel."""
    from nfsconf.report.kernel import kernel_image

    assert opts.out is not None
    existing = load_run(opts.out)
    if not existing.envs:
        raise ResultsError(f"{existing.path}: no env record: not the results of `nfsconf run`")
    env, recorded = existing.env, existing.env.get("run") or {}
    if check_kernel:
        if env.get("kernel") != platform.release():
            raise ResultsError(f"{opts.out} was run on kernel {env.get('kernel')}, this is "
                               f"{platform.release()}: resume it on the kernel it started on")
        then = (env.get("kernel_image") or {}).get("build_id")
        now = kernel_image()["build_id"]
        if then and now and then != now:
            raise ResultsError(f"{opts.out} was run on kernel build {then[:16]}, this is "
                               f"{now[:16]} (same release, another build)")
    if env.get("transport") not in (opts.transport, None):
        raise ResultsError(f"{opts.out} was run with transport {env.get('transport')}; "
                           f"give --transport {env.get('transport')}")
    if not opts.profiles:
        opts.profiles = list(recorded.get("profiles") or env.get("profiles") or [])
    if opts.k is None:
        opts.k = recorded.get("k")
    if opts.shard is None:
        opts.shard = recorded.get("shard")


def run_here(opts: RunOptions, context: RunContext | None = None) -> RunOutcome:
    """Run the scenarios of a validated plan (plan.validate) on the running kernel."""
    from nfsconf.environment import environment_record
    from nfsconf.report.kernel import kernel_image

    out = Path(opts.out) if opts.out else default_out(opts.transport)
    opts.out = out
    if opts.resume:
        take_resumed(opts)
    elif (out / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a run: give another --out, or --resume {out}")
    profiles = profiles_of(opts.profiles)
    preflight()
    out.mkdir(parents=True, exist_ok=True)
    if not opts.profiles:
        from nfsconf.servers.builtin import BUILTIN

        skipped = [p.name for p in BUILTIN if not p.installed()]
        if skipped:
            print(f"not installed, not run: {', '.join(skipped)}")
    # the plugin is told the profiles as they were found (all installed built-ins when none)
    opts.profiles = opts.profiles or [p.name for p in profiles]
    print(f"nfsconf {nfsconf.__version__}: transport {opts.transport}, profiles "
          f"{', '.join(p.name for p in profiles)}; results in {out}/results.jsonl", flush=True)
    env = environment_record(opts.transport, {p.name: p.server_version() for p in profiles})
    env["kernel_image"] = kernel_image()
    env["run"] = {"profiles": opts.profiles, "k": opts.k, "shard": opts.shard}
    if opts.resume:
        env["resumed"] = True
    writer = ResultsWriter(out / "results.jsonl")
    writer.write(env)
    writer.close()
    code, elapsed = _pytest(opts, context or RunContext())
    outcome = finish(out, interrupted=code == "interrupted")
    print(f"\n{len(outcome.results)} results in {elapsed:.1f} s; {out}/results.jsonl, "
          f"{out}/matrix.txt")
    if code == "no-tests":
        raise UsageError(f"no scenario matched (-k {opts.k!r})" if opts.k else "no scenarios")
    if code == "internal":
        outcome.exit_status = 2
    elif opts.strict and any(r.must and r.verdict in ("FAIL", "ERROR") for r in outcome.results):
        outcome.exit_status = max(outcome.exit_status, 1)
    return outcome


def _pytest(opts: RunOptions, context: RunContext) -> tuple[str, float]:
    import pytest

    scenarios = Path(opts.scenarios).resolve()
    home = scenarios if scenarios.is_dir() else scenarios.parent
    jobs = opts.jobs or 1
    # other installed pytest plugins stay out: the scenarios use none, and loading one
    # (hypothesis's imports, assertion rewriting of its package) costs seconds under TCG
    args = [str(scenarios), "-p", "nfsconf.plugin", "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest", "-p", "no:xdist.looponfail",
            *(() if jobs > 1 else ("-p", "no:xdist")),
            # the knfsd guest imports the plugin while knfsd comes up (vm/lane.py): it has
            # no assert to rewrite, so pytest's notice that it cannot is noise in every guest
            "-W", "ignore:Module already imported so cannot be rewritten; nfsconf.plugin"
                  ":pytest.PytestAssertRewriteWarning",
            "-q", "--no-header", "--tb=no", "-rN", "--rootdir", str(home),
            "--confcutdir", str(home), "-c", os.devnull, *opts.plugin_argv()]
    if opts.k:
        args += ["-k", opts.k]
    if jobs > 1:
        # each cell has its own lab, so any two can run at once; a drop_caches in one
        # worker only makes another's objects colder, and warm decodes pin what they need
        args += ["-n", str(jobs), "--dist", "load"]
    started = time.monotonic()
    # pytest keeps the scenarios' rewritten asserts in __pycache__ only where bytecode may
    # be written: without it every run rewrites them again (a second on the host)
    written, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        code = pytest.main(args, plugins=[context])
    finally:
        sys.dont_write_bytecode = written
    elapsed = time.monotonic() - started
    names = {pytest.ExitCode.INTERRUPTED: "interrupted",
             pytest.ExitCode.INTERNAL_ERROR: "internal", pytest.ExitCode.USAGE_ERROR: "internal",
             pytest.ExitCode.NO_TESTS_COLLECTED: "no-tests"}
    return names.get(code, "ok"), elapsed  # type: ignore[call-overload]


def warm_scenarios(scenarios: Path) -> None:
    """Have pytest rewrite the scenarios' asserts here, once per change, into the tree's
    __pycache__: a guest's root is a throw-away overlay, so a guest that had to do it
    would do it on every boot (a second each, after every kernel crash too)."""
    import pytest

    scenarios = Path(scenarios).resolve()
    home = scenarios if scenarios.is_dir() else scenarios.parent
    tag = f"{sys.implementation.cache_tag}-pytest-{pytest.__version__}"
    sources = sorted(home.glob("*.py")) if scenarios.is_dir() else [scenarios]

    def fresh(src: Path) -> bool:
        cached = src.parent / "__pycache__" / f"{src.stem}.{tag}.pyc"
        return cached.exists() and cached.stat().st_mtime >= src.stat().st_mtime

    if all(fresh(src) for src in sources if src.name.startswith(("test_", "conftest"))):
        return
    code = ("import sys; sys.dont_write_bytecode = False; import pytest; "
            "sys.exit(pytest.main(sys.argv[1:]))")
    subprocess.run([sys.executable, "-c", code, str(scenarios), "--collect-only", "-q",
                    "-p", "no:cacheprovider", "--rootdir", str(home), "-c", os.devnull],
                   capture_output=True, timeout=300, cwd=home, check=False)


def planned_nodes(out: Path) -> list[str]:
    try:
        return list(json.loads((out / PLANNED).read_text()))
    except (OSError, ValueError):
        return []


def finish(out: Path, *, interrupted: bool = False, show: bool = True,
           views: bool = True) -> RunOutcome:
    """After the scenarios: the VIEWS, the matrix on the terminal (SHOW), what is missing."""
    from nfsconf.report.matrix import render
    from nfsconf.report.results import load_run
    from nfsconf.report.views import pynfs_lines, write_views

    _, results = read_results(out / "results.jsonl")
    if views or show:
        text = render(results) + pynfs_lines(results)
    if views:
        (out / "matrix.txt").write_text(text + "\n")
        write_views(load_run(out), out, ("markdown", "junit", "html"))
    if show:
        print("\n" + text)
    done = {r.node for r in results}
    missing = [n for n in planned_nodes(out) if n not in done]
    outcome = RunOutcome(out, results, missing, interrupted)
    if interrupted:
        print(f"run interrupted: {len(missing)} cell(s) not run; the results above are what "
              f"finished (nfsconf run --resume {out})", flush=True)
        outcome.exit_status = 130
    elif missing:
        report_incomplete(missing, len(planned_nodes(out)), out)
        outcome.exit_status = INCOMPLETE
    return outcome


def report_incomplete(missing: list[str], planned: int, out: Path) -> None:
    """Say which planned cells have no result and how to finish them."""
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    print(f"run INCOMPLETE: {len(missing)} of {planned} planned cells have no result "
          f"({shown}); finish it with nfsconf run --resume {out}", flush=True)

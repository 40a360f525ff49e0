"""The nfsconf command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import nfsconf
from nfsconf.report.results import ResultsError, ResultsWriter, read_results
from nfsconf.servers.builtin import BUILTIN, find_profile, installed_builtins
from nfsconf.servers.profile import Profile, ProfileError

SCENARIOS = Path(nfsconf.__file__).resolve().parent.parent / "scenarios"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _profiles(specs: list[str]) -> list[Profile]:
    try:
        profiles = [find_profile(s) for s in specs] if specs else installed_builtins()
    except ProfileError as e:
        raise UsageError(str(e)) from e
    missing = [p for p in profiles if not p.installed()]
    if missing:
        raise UsageError(", ".join(f"profile {p.name}: {p.binary} is not installed"
                                   + (f" (apt-get install {p.package})" if p.package else "")
                                   for p in missing))
    if not profiles:
        raise UsageError("no FUSE server of the built-in profiles is installed; "
                         "see `nfsconf doctor`")
    return profiles


def _preflight() -> None:
    if os.geteuid() != 0:
        raise UsageError("nfsconf run needs root (mount, drop_caches, open_by_handle_at)")
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing; see `nfsconf doctor`")


def cmd_run(args: argparse.Namespace) -> int:
    from nfsconf.environment import environment_record
    from nfsconf.report.matrix import render
    from nfsconf.report.results import load_run
    from nfsconf.report.resume import annotate_env, resume_args
    from nfsconf.report.views import write_views

    boots_vm = args.transport == "knfsd" and not os.environ.get("NFSCONF_IN_GUEST")
    # with a VM the guest resumes: it runs the kernel the run was made on, the host does not
    if args.resume and not boots_vm:
        try:
            resume_args(args)  # the profiles, -k and out of the run being finished
        except ResultsError as e:
            raise UsageError(str(e)) from e
    profiles = _profiles(args.profile)
    _preflight()
    if boots_vm:
        return _run_knfsd(args, profiles)
    scenarios = Path(args.scenarios).resolve()
    if not scenarios.exists():
        raise UsageError(f"{scenarios}: no such scenarios directory or file")
    home = scenarios if scenarios.is_dir() else scenarios.parent
    out = Path(args.out or f"reports/run-{time.strftime('%Y%m%d-%H%M%S')}-{args.transport}")
    if (out / "results.jsonl").exists() and not args.resume:
        raise UsageError(f"{out} already holds a run: give another --out, or --resume {out}")
    out.mkdir(parents=True, exist_ok=True)
    skipped = [p.name for p in BUILTIN if not p.installed()] if not args.profile else []
    if skipped:
        print(f"not installed, not run: {', '.join(skipped)}")
    print(f"nfsconf {nfsconf.__version__}: transport {args.transport}, profiles "
          f"{', '.join(p.name for p in profiles)}; results in {out}/results.jsonl", flush=True)
    writer = ResultsWriter(out / "results.jsonl")
    writer.write(annotate_env(environment_record(args.transport,
                                                 {p.name: p.server_version() for p in profiles}),
                              args, args.profile or [p.name for p in profiles]))
    writer.close()

    import pytest

    pytest_args = [str(scenarios), "-p", "nfsconf.plugin", "-p", "no:cacheprovider",
                   "-q", "--no-header", "--tb=no", "-rN", "--rootdir", str(home),
                   "--confcutdir", str(home), "-c", os.devnull,
                   "--nfsconf-transport", args.transport, "--nfsconf-out", str(out),
                   "--nfsconf-timeout", str(args.timeout),
                   "--nfsconf-fuzz-budget", str(args.fuzz_budget),
                   "--nfsconf-fuzz-seed", str(args.fuzz_seed)]
    for spec in args.profile or [p.name for p in profiles]:
        pytest_args += ["--nfsconf-profile", spec]
    if args.k:
        pytest_args += ["-k", args.k]
    if args.resume:
        pytest_args.append("--nfsconf-resume")  # skip every scenario already recorded
    started = time.monotonic()
    code = pytest.main(pytest_args)
    elapsed = time.monotonic() - started
    _, results = read_results(out / "results.jsonl")
    text = render(results)
    (out / "matrix.txt").write_text(text + "\n")
    write_views(load_run(out), out, ("markdown", "junit", "html"))
    print("\n" + text)
    print(f"\n{len(results)} results in {elapsed:.1f} s; {out}/results.jsonl, {out}/matrix.txt")
    if code in (pytest.ExitCode.INTERRUPTED,):
        print("run interrupted: the results above are what finished", file=sys.stderr)
        return 130
    if code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        return 2
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise UsageError(f"no scenario matched (-k {args.k!r})" if args.k else "no scenarios")
    must = [r for r in results if r.must and r.verdict in ("FAIL", "ERROR")]
    return 1 if (args.strict and must) else 0


def _run_knfsd(args: argparse.Namespace, profiles: list[Profile]) -> int:
    """Boot the kernel under test and run the suite inside it (transports/knfsd.py)."""
    from nfsconf.transports.knfsd import KnfsdRunError, run_on_vm

    out = Path(args.resume or args.out or
               f"reports/run-{time.strftime('%Y%m%d-%H%M%S')}-knfsd")
    if (out / "results.jsonl").exists() and not args.resume:
        raise UsageError(f"{out} already holds a run: give another --out, or --resume {out}")
    run_args = ["--timeout", str(args.timeout), "--fuzz-budget", str(args.fuzz_budget),
                "--fuzz-seed", str(args.fuzz_seed)]
    if args.resume:  # the guest checks that it runs the kernel build the run started on
        run_args += ["--resume", str(out.resolve())]
    # resuming, the guest takes the profiles and -k the run was started with
    for spec in args.profile or ([] if args.resume else [p.name for p in profiles]):
        # the guest sees the host's root but not its working directory
        run_args += ["--profile", str(Path(spec).resolve()) if spec.endswith(".toml") else spec]
    if args.k:
        run_args += ["-k", args.k]
    if args.strict:
        run_args.append("--strict")
    if args.scenarios != str(SCENARIOS):
        run_args += ["--scenarios", str(Path(args.scenarios).resolve())]
    try:
        code = run_on_vm(args.kernel, out, run_args, args.vm_timeout)
    except KnfsdRunError as e:
        raise UsageError(str(e)) from e
    return code


def cmd_doctor(args: argparse.Namespace) -> int:
    from nfsconf.doctor import checks, local_ready, render

    results = checks()
    print(render(results))
    ready = local_ready(results)
    print("\nlocal transport: " + ("ready" if ready else "NOT ready (see fixes above)"))
    return 0 if ready else 1


def cmd_profiles(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [[p.name, "yes" if p.installed() else "no", p.source, p.description,
             ", ".join(k for k, v in vars(p.claims).items() if v)] for p in BUILTIN]
    print(tabulate(rows, ["profile", "installed", "source", "description", "claims"]))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from nfsconf.chaos import chaos

    profiles = [p.name for p in _profiles(args.profile)]
    _preflight()
    print(f"chaos for {args.duration:g} s over {', '.join(profiles)} (seed {args.seed})",
          flush=True)
    report = chaos(args.duration, profiles, args.seed, args.timeout)
    print(json.dumps(asdict(report), indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(asdict(report), indent=1) + "\n")
    print("chaos: " + ("clean" if report.clean else "PROBLEMS (see above)"))
    return 0 if report.clean else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from nfsconf.bench import ANCHOR, decode_bench

    _preflight()
    profiles = _profiles([*args.profile, ANCHOR])
    names = [p.name for p in profiles if p.name != ANCHOR] or ["ref-stable"]
    print(f"cold decode of {args.n} files, {args.rounds} rounds, anchor {ANCHOR}", flush=True)
    result = decode_bench(names, args.n, args.rounds)
    from tabulate import tabulate

    rows = [[name, f"{best:,.0f}", f"{result['ratio_to_anchor'][name]:.2f}"]
            for name, best in result["best"].items()]
    print(tabulate(rows, ["profile", "best files/s", f"ratio to {ANCHOR}"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfsconf", description="NFS re-export conformance suite for FUSE filesystems")
    parser.add_argument("--version", action="version", version=nfsconf.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the conformance matrix")
    run.add_argument("--profile", action="append", default=[], metavar="NAME|FILE",
                     help="built-in profile name or TOML file (repeatable; default: every "
                          "installed built-in)")
    run.add_argument("--transport", default="local", choices=["local", "ganesha", "knfsd"])
    run.add_argument("-k", metavar="PATTERN", help="only scenarios matching (pytest -k)")
    run.add_argument("--out", metavar="DIR", help="results directory (default reports/run-*)")
    run.add_argument("--scenarios", default=str(SCENARIOS), help=argparse.SUPPRESS)
    run.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                     help="time limit of one scenario; a server that stops answering is "
                          "aborted and its cell is ERROR (default 120)")
    run.add_argument("--fuzz-budget", type=int, default=200, metavar="N",
                     help="mutated handles per fuzz scenario (default 200)")
    run.add_argument("--fuzz-seed", type=int, default=1, metavar="SEED",
                     help="seed of the fuzz scenarios; the same seed replays them (default 1)")
    run.add_argument("--kernel", metavar="SPEC",
                     help="knfsd: bzImage/vmlinuz with modules beside it, a built tree, or "
                          "debian:bookworm|trixie|sid (default: Debian's current kernel)")
    run.add_argument("--vm-timeout", type=float, default=3600.0, metavar="SECONDS",
                     help="knfsd: the whole VM run's limit; past it the VM is powered off")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 when a MUST scenario fails (for CI gates)")
    run.add_argument("--resume", metavar="DIR",
                     help="finish the killed run in DIR: same profiles and -k, only the "
                          "scenarios it has no record of")
    run.set_defaults(func=cmd_run)

    chaos = sub.add_parser("chaos", help="repeat runs while killing servers; count leaks")
    chaos.add_argument("--duration", type=float, default=300.0, metavar="SECONDS")
    chaos.add_argument("--profile", action="append", default=[], metavar="NAME|FILE")
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="scenario time limit inside each run (default 10)")
    chaos.add_argument("--out", metavar="FILE", help="write the counts as JSON")
    chaos.set_defaults(func=cmd_chaos)

    bench = sub.add_parser("bench", help="benchmarks, as ratios to an anchor of the same run")
    bench.add_argument("what", choices=["decode"], help="decode: cold open_by_handle_at rate")
    bench.add_argument("--profile", action="append", default=[], metavar="NAME|FILE",
                       help="profiles to measure (default: ref-stable)")
    bench.add_argument("-n", type=int, default=5000, help="files per round (default 5000)")
    bench.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    bench.add_argument("--out", metavar="FILE", help="write the figures as JSON")
    bench.set_defaults(func=cmd_bench)

    doctor = sub.add_parser("doctor", help="what this machine can run, and how to fix the rest")
    doctor.set_defaults(func=cmd_doctor)

    profiles = sub.add_parser("profiles", help="list the built-in profiles")
    profiles.set_defaults(func=cmd_profiles)


    from nfsconf.report.commands import add_parsers

    add_parsers(sub)  # report, diff, certify
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: every lab, server and VM this process started is ended
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"nfsconf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfsconf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The nfsconf command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import nfsconf
from nfsconf.errors import NfsconfError, UsageError
from nfsconf.plan import RunOptions, add_arguments
from nfsconf.run import preflight, profiles_of
from nfsconf.servers.builtin import BUILTIN
from nfsconf.service import run


def cmd_run(args: argparse.Namespace) -> int:
    outcome = run(RunOptions.from_args(args))
    if outcome.interrupted:
        print("run interrupted: the results above are what finished", file=sys.stderr)
    return outcome.exit_status


def cmd_doctor(args: argparse.Namespace) -> int:
    from nfsconf.doctor import checks, local_ready, render

    results = checks()
    print(render(results))
    ready = local_ready(results)
    print("\nlocal transport: " + ("ready" if ready else "NOT ready (see fixes above)"))
    return 0 if ready else 1


def cmd_scenarios(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from nfsconf.catalog import catalog, markdown_table

    if args.markdown:
        print(markdown_table())
        return 0
    rows = [[s.id, s.level, "kernel" if s.certify is None else
             f"{s.certify}{' (advisory)' if s.advisory else ''}", s.where, s.what[:90]]
            for s in catalog()]
    print(tabulate(rows, ["scenario", "level", "certifies", "runs", "what"]))
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [[p.name, "yes" if p.installed() else "no", p.source, p.description,
             ", ".join(k for k, v in vars(p.claims).items() if v)] for p in BUILTIN]
    print(tabulate(rows, ["profile", "installed", "source", "description", "claims"]))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from nfsconf.chaos import chaos

    profiles = [p.name for p in profiles_of(args.profile)]
    preflight()
    print(f"chaos for {args.duration:g} s over {', '.join(profiles)} (seed {args.seed})",
          flush=True)
    report = chaos(args.duration, profiles, args.seed, args.timeout)
    print(json.dumps(asdict(report), indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(asdict(report), indent=1) + "\n")
    print("chaos: " + ("clean" if report.clean else "PROBLEMS (see above)"))
    return 0 if report.clean else 1


def cmd_bench(args: argparse.Namespace) -> int:
    preflight()
    if args.what == "matrix":
        from nfsconf.bench.matrix import matrix_bench, render

        jobs = args.jobs or os.cpu_count() or 1
        result = matrix_bench(Path(args.dir or tempfile.mkdtemp(prefix="nfsconf-bench-")),
                              [p.name for p in profiles_of(args.profile)], args.k, jobs)
    elif args.what == "vm":
        from nfsconf.bench.vm import DEFAULT_SPECS, render, vm_bench

        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        if not engines or set(engines) - set(DEFAULT_SPECS):
            raise UsageError(f"--engines {args.engines!r}: qemu, uml or qemu,uml")
        specs = {"qemu": args.kernel or DEFAULT_SPECS["qemu"],
                 "uml": args.uml_kernel or DEFAULT_SPECS["uml"]}
        result = vm_bench(Path(args.dir or tempfile.mkdtemp(prefix="nfsconf-bench-")),
                          {e: specs[e] for e in engines},
                          [p.name for p in profiles_of(args.profile)], args.k)
    else:
        from nfsconf.bench.decode import ANCHOR, decode_bench, render

        profiles = profiles_of([*args.profile, ANCHOR])
        names = [p.name for p in profiles if p.name != ANCHOR] or ["ref-stable"]
        print(f"cold decode of {args.n} files, {args.rounds} rounds, anchor {ANCHOR}",
              flush=True)
        result = decode_bench(names, args.n, args.rounds)
    print(render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_kernel(args: argparse.Namespace) -> int:
    from nfsconf.vm.build import BuildRequest, build, list_builds, main_say
    from nfsconf.vm.kernels import default_cache_dir

    cache = Path(args.cache) if args.cache else default_cache_dir()
    if args.kernel_command == "list":
        from tabulate import tabulate

        rows = [[r.get("release"), r.get("arch", "x86"), r.get("source_version"),
                 len(r.get("series") or []),
                 f"{float(r.get('build_seconds') or 0) / 60:.1f} min", str(d)]
                for d, r in list_builds(cache)]
        print(tabulate(rows, ["release", "arch", "source", "patches", "build", "tree"]))
        return 0
    if os.geteuid() != 0:
        raise UsageError(f"nfsconf kernel {args.kernel_command} needs root (apt-get download "
                         f"into the cache)")
    if args.jobs < 1:
        raise UsageError("-j must be at least 1")
    if args.kernel_command == "walk":
        from nfsconf.service import walk
        from nfsconf.vm.walk import WalkRequest

        opts = RunOptions.from_args(args)
        opts.transport = "knfsd"
        return walk(WalkRequest(base=args.base, series=tuple(Path(s) for s in args.series),
                                config=Path(args.config) if args.config else None,
                                jobs=args.jobs, arch=args.arch), opts, cache)
    req = BuildRequest(base=args.base, series=tuple(Path(s) for s in args.series),
                       config=Path(args.config) if args.config else None, jobs=args.jobs,
                       arch=args.arch)
    print(build(req, cache, say=main_say).tree)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfsconf", description="NFS re-export conformance suite for FUSE filesystems")
    parser.add_argument("--version", action="version", version=nfsconf.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the conformance matrix")
    add_arguments(run)
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
    bench.add_argument("what", choices=["decode", "matrix", "vm"],
                       help="decode: cold open_by_handle_at rate against mergerfs -o noforget; "
                            "matrix: the local matrix at --jobs 1 and N, and where its time "
                            "goes; vm: one knfsd lane on qemu (the anchor) and User-Mode Linux")
    bench.add_argument("--profile", action="append", default=[], metavar="NAME|FILE",
                       help="profiles to measure (decode default: ref-stable; matrix and vm: "
                            "as for run)")
    bench.add_argument("-n", type=int, default=5000, help="decode: files per round (5000)")
    bench.add_argument("--rounds", type=int, default=3,
                       help="decode: interleaved rounds; the best counts (3)")
    bench.add_argument("-k", metavar="PATTERN", help="matrix, vm: only these scenarios")
    bench.add_argument("--jobs", type=int, metavar="N",
                       help="matrix: the parallel run's --jobs (default: the cores)")
    bench.add_argument("--kernel", metavar="SPEC",
                       help="vm: qemu's kernel, as for run (default debian:bookworm)")
    bench.add_argument("--uml-kernel", metavar="SPEC",
                       help="vm: User-Mode Linux's kernel (default uml:debian, the same "
                            "kernel line as bookworm's bzImage)")
    bench.add_argument("--engines", default="qemu,uml", metavar="LIST",
                       help="vm: which engines to measure (default qemu,uml: qemu is the "
                            "anchor)")
    bench.add_argument("--dir", metavar="DIR",
                       help="matrix, vm: where the runs go (default: a new temporary dir)")
    bench.add_argument("--out", metavar="FILE", help="write the figures as JSON")
    bench.set_defaults(func=cmd_bench)

    kernel = sub.add_parser("kernel", help="build a kernel with a patch series for the VM")
    ksub = kernel.add_subparsers(dest="kernel_command", required=True)
    kb = ksub.add_parser("build", help="Debian's linux-source + a series, built and cached; "
                                       "prints the tree for `run --kernel`")
    kb.add_argument("--base", default="debian:sid", metavar="debian[:SUITE]",
                    help="whose linux-source to build (default debian:sid)")
    kb.add_argument("--series", metavar="DIR|MBOX", action="append", default=[],
                    help="git format-patch files (or a quilt series) or one mbox to apply; "
                         "repeatable: applied in the order given (a series, then fixes)")
    kb.add_argument("--config", metavar="FRAGMENT",
                    help="Kconfig fragment merged over the lean guest configuration")
    kb.add_argument("--arch", default="x86", choices=("x86", "um"),
                    help="x86: a bzImage booted by qemu (default); um: User-Mode Linux, a "
                         "kernel that runs as a host process at host speed")
    kb.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    kb.add_argument("--cache", metavar="DIR", help="default ~/.cache/nfsconf/kernels")
    kw = ksub.add_parser("walk", help="build the base and then each patch of a series in "
                                      "turn, run the selection on every step, and show which "
                                      "patch changed which verdict")
    kw.add_argument("--base", default="debian:sid", metavar="debian[:SUITE]",
                    help="whose linux-source (default debian:sid)")
    kw.add_argument("--series", metavar="DIR|MBOX", action="append", required=True,
                    help="the patches to walk; repeatable: walked in the order given (a "
                         "series, then its fixes)")
    kw.add_argument("--config", metavar="FRAGMENT",
                    help="Kconfig fragment merged over the lean guest configuration")
    kw.add_argument("--arch", default="x86", choices=("x86", "um"),
                    help="um: User-Mode Linux, minutes instead of an hour (default x86)")
    kw.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    kw.add_argument("--cache", metavar="DIR", help="default ~/.cache/nfsconf/kernels")
    add_arguments(kw, ("profiles", "k", "out", "timeout", "vm_timeout"), helps={
        "profiles": "profiles to run on every step (repeatable; default: every installed "
                    "built-in)",
        "out": "where the steps' run directories and walk.md go",
        "vm_timeout": "each step's VM run limit (default %(default)g)"})
    kl = ksub.add_parser("list", help="the kernels built so far")
    kl.add_argument("--cache", metavar="DIR")
    kernel.set_defaults(func=cmd_kernel)

    doctor = sub.add_parser("doctor", help="what this machine can run, and how to fix the rest")
    doctor.set_defaults(func=cmd_doctor)

    scen = sub.add_parser("scenarios", help="list the scenarios: ID, level, certification "
                                            "level, where they run")
    scen.add_argument("--markdown", action="store_true", help="README's table")
    scen.set_defaults(func=cmd_scenarios)

    profiles = sub.add_parser("profiles", help="list the built-in profiles")
    profiles.set_defaults(func=cmd_profiles)


    from nfsconf.cli.report import add_parsers

    add_parsers(sub)  # report, diff, certify
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: every lab, server and VM this process started is ended
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args)
    except NfsconfError as e:
        print(f"nfsconf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfsconf: interrupted", file=sys.stderr)
        return 130

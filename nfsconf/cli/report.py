"""`nfsconf report`, `nfsconf diff` and `nfsconf certify`: argument parsing and the commands.
Every bad input (a missing or foreign results file, an unknown profile) is one line, exit 2."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nfsconf.errors import ResultsError, UsageError
from nfsconf.report.results import Run, load_run, load_runs


def _expectations(path: str | None):  # -> Expectations | None
    from nfsconf.report.expect import Expectations

    return Expectations(Path(path)) if path else None


def cmd_report(args: argparse.Namespace) -> int:
    from nfsconf.report import kcidb
    from nfsconf.report.views import FORMATS, terminal, write_views

    formats = tuple(args.format or FORMATS)
    # KCIDB needs an origin: checked before any run is read
    if kcidb.FORMAT in formats:
        kcidb.check_origin(args.kcidb_origin)
    elif args.kcidb_origin is not None:
        raise UsageError("--kcidb-origin goes with --format kcidb")
    run = load_runs(args.dir, args.allow_mixed)  # its refusals hold for every format
    expect = _expectations(args.expect)
    if expect is not None:
        run = Run(run.path, run.envs, expect.apply(run.env.get("kernel", ""), run.results))
    out = Path(args.out) if args.out else (
        run.path.parent if len(args.dir) == 1 else Path(args.dir[0]))
    written = write_views(run, out, tuple(f for f in formats if f != kcidb.FORMAT))
    if kcidb.FORMAT in formats:
        # each run on its own: a test points to the build of the run that holds it
        written.append(kcidb.write(kcidb.load_parts(args.dir, expect), args.kcidb_origin, out))
    if "terminal" in formats:
        print(terminal(run) + "\n")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from nfsconf.report.diff import diff, render_diff

    pairs = {}
    for spec in args.pair:
        base_name, sep, new_name = spec.partition(":")
        if not sep or not base_name or not new_name:
            raise ResultsError(f"--pair {spec!r}: give BASE_PROFILE:NEW_PROFILE")
        pairs[base_name] = new_name
    if args.last:
        from nfsconf.report.history import last_two

        if args.new is not None:
            raise ResultsError("diff --last DIR compares the newest run under DIR with the "
                               "one before it: give one directory")
        before, newest = last_two(args.base)
        print(f"BASE {before.path} ({before.started}), NEW {newest.path} ({newest.started})")
        base_dirs, new_dirs = [before.path], [newest.path]
    elif args.new is None:
        raise ResultsError("give BASE and NEW, or --last DIR")
    else:
        base_dirs, new_dirs = [args.base], [args.new]
    d = diff(load_runs(base_dirs, args.allow_mixed), load_runs(new_dirs, args.allow_mixed),
             _expectations(args.expect), pairs)
    print(render_diff(d, args.format), end="")
    return 1 if d.must_regressions else 0


def cmd_certify(args: argparse.Namespace) -> int:
    from nfsconf.plan import RunOptions
    from nfsconf.report.certify import certify, render_certificate
    from nfsconf.service import run

    if args.results:
        results = load_runs(args.results, args.allow_mixed)
        profiles = [_profile_name(p) for p in args.profile] or list(
            dict.fromkeys(r.profile for r in results.results))
    else:
        # no --profile: every installed built-in, as `nfsconf run` does
        if len(args.kernel) > 1:
            raise UsageError("certify: one --kernel (a certificate holds for one kernel)")
        names = "+".join(Path(p).stem for p in args.profile) or "builtins"
        opts = RunOptions.from_args(args)
        opts.out = out = opts.out or Path(
            f"reports/certify-{names}-{time.strftime('%Y%m%d-%H%M%S')}")
        outcome = run(opts)
        if outcome.interrupted or outcome.missing or outcome.exit_status == 2:
            print("nfsconf certify: the run did not complete; no certificate")
            return outcome.exit_status or 1
        results = load_run(out)
        # the certificate names profiles as the run recorded them (a TOML file's `name`)
        profiles = list(dict.fromkeys(r.profile for r in results.results))
    certs = [certify(results, p) for p in profiles]
    print()
    for c in certs:
        print(render_certificate(c) + "\n")
    target = results.path.parent / "certificate.json"
    target.write_text(json.dumps([c.to_dict() for c in certs], indent=1) + "\n")
    print(f"certificate: {target}")
    low = [c.profile for c in certs if c.level < args.min_level]
    if low:
        print(f"below level {args.min_level}: {', '.join(low)}")
        return 1
    return 0


def _profile_name(spec: str) -> str:
    """A profile file's results carry the `name` inside it, not the file's name."""
    if spec.endswith(".toml") or "/" in spec:
        from nfsconf.servers.builtin import find_profile
        from nfsconf.servers.profile import ProfileError

        try:
            return find_profile(spec).name
        except ProfileError as e:
            raise ResultsError(str(e)) from e
    return spec


def cmd_history(args: argparse.Namespace) -> int:
    from nfsconf.report.history import entries, render

    items = entries(args.dir)
    print(render(items))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from nfsconf.plan import add_arguments
    from nfsconf.report import kcidb
    from nfsconf.report.views import FORMATS

    report = sub.add_parser("report", help="write the HTML, Markdown, JUnit and terminal views "
                                           "of a run")
    report.add_argument("dir", metavar="DIR", nargs="+",
                        help="run directory (or its results.jsonl); several, or a directory "
                             "of run directories (shards, kernels), are merged into one report")
    report.add_argument("--format", action="append", choices=(*FORMATS, kcidb.FORMAT),
                        help="only this view (repeatable; default: all but kcidb); kcidb: "
                             "OUT/kcidb.json, a KernelCI database report")
    report.add_argument("--kcidb-origin", metavar="NAME",
                        help="with --format kcidb: the CI system's KCIDB origin, which every "
                             "ID carries ([a-z0-9_]+)")
    report.add_argument("--out", metavar="DIR", help="where to write (default: DIR)")
    report.add_argument("--expect", metavar="DIR",
                        help="expectations directory: listed failures show as XFAIL")
    _allow_mixed(report)
    report.set_defaults(func=cmd_report)

    d = sub.add_parser("diff", help="regression report of NEW against BASE; exit 1 when a "
                                    "MUST scenario regressed")
    d.add_argument("base", metavar="BASE",
                   help="run directory of the reference run (or a directory of its shards)")
    d.add_argument("new", metavar="NEW", nargs="?",
                   help="run directory of the run under review")
    d.add_argument("--last", action="store_true",
                   help="BASE is a tree of runs: compare its newest run with the one before "
                        "it of the same profiles and transport")
    d.add_argument("--expect", metavar="DIR",
                   help="expectations directory (DIR/<kernel release>/<profile>.txt, DIR/any/)")
    d.add_argument("--pair", action="append", default=[], metavar="BASE_PROFILE:NEW_PROFILE",
                   help="compare a BASE profile with a differently named NEW one (repeatable)")
    d.add_argument("--format", choices=("text", "markdown"), default="text")
    _allow_mixed(d)
    d.set_defaults(func=cmd_diff)

    h = sub.add_parser("history", help="the runs under a directory, by kernel build, "
                                       "oldest first")
    h.add_argument("dir", metavar="DIR", help="a tree of run directories")
    h.set_defaults(func=cmd_history)

    c = sub.add_parser("certify", help="run what certification needs and print each "
                                       "profile's level (docs/certification.md)")
    add_arguments(c, ("profiles", "transport", "kernels", "out"), helps={
        "profiles": "profile to certify (repeatable; default: every installed built-in)",
        "out": "results directory of the certification run",
        "kernels": "knfsd: the kernel to boot, as for run"})
    c.add_argument("--results", metavar="DIR", nargs="+",
                   help="certify from earlier runs (merged: shards), run nothing")
    c.add_argument("--min-level", type=int, default=0, metavar="N",
                   help="exit 1 when a profile earns less than level N")
    _allow_mixed(c)
    c.set_defaults(func=cmd_certify)


def _allow_mixed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-mixed", action="store_true",
                        help="merge runs of other kernel builds or nfsconf versions (a column "
                             "per kernel)")

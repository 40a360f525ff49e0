"""`nfsconf report`, `nfsconf diff` and `nfsconf certify`: argument parsing and the commands.
Every bad input (a missing or foreign results file, an unknown profile) is one line, exit 2."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nfsconf.errors import ResultsError
from nfsconf.report.results import Run, load_run


def _expectations(path: str | None):  # -> Expectations | None
    from nfsconf.report.expect import Expectations

    return Expectations(Path(path)) if path else None


def cmd_report(args: argparse.Namespace) -> int:
    from nfsconf.report.views import FORMATS, terminal, write_views

    run = load_run(args.dir)
    expect = _expectations(args.expect)
    if expect is not None:
        run = Run(run.path, run.envs, expect.apply(run.env.get("kernel", ""), run.results))
    formats = tuple(args.format or FORMATS)
    out = Path(args.out) if args.out else run.path.parent
    written = write_views(run, out, formats)
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
    d = diff(load_run(args.base), load_run(args.new), _expectations(args.expect), pairs)
    print(render_diff(d, args.format), end="")
    return 1 if d.must_regressions else 0


def cmd_certify(args: argparse.Namespace) -> int:
    from nfsconf.report.certify import certify, render_certificate
    from nfsconf.run import RunOptions
    from nfsconf.service import run

    if args.results:
        results = load_run(args.results)
        profiles = [_profile_name(p) for p in args.profile] or list(
            dict.fromkeys(r.profile for r in results.results))
    else:
        # no --profile: every installed built-in, as `nfsconf run` does
        names = "+".join(Path(p).stem for p in args.profile) or "builtins"
        out = Path(args.out or f"reports/certify-{names}-{time.strftime('%Y%m%d-%H%M%S')}")
        outcome = run(RunOptions(profiles=list(args.profile), transport=args.transport,
                                 out=out, kernel=args.kernel))
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from nfsconf.report.views import FORMATS
    from nfsconf.service import TRANSPORTS

    report = sub.add_parser("report", help="write the HTML, Markdown, JUnit and terminal views "
                                           "of a run")
    report.add_argument("dir", metavar="DIR", help="run directory (or its results.jsonl)")
    report.add_argument("--format", action="append", choices=FORMATS,
                        help="only this view (repeatable; default: all)")
    report.add_argument("--out", metavar="DIR", help="where to write (default: DIR)")
    report.add_argument("--expect", metavar="DIR",
                        help="expectations directory: listed failures show as XFAIL")
    report.set_defaults(func=cmd_report)

    d = sub.add_parser("diff", help="regression report of NEW against BASE; exit 1 when a "
                                    "MUST scenario regressed")
    d.add_argument("base", metavar="BASE", help="run directory of the reference run")
    d.add_argument("new", metavar="NEW", help="run directory of the run under review")
    d.add_argument("--expect", metavar="DIR",
                   help="expectations directory (DIR/<kernel release>/<profile>.txt, DIR/any/)")
    d.add_argument("--pair", action="append", default=[], metavar="BASE_PROFILE:NEW_PROFILE",
                   help="compare a BASE profile with a differently named NEW one (repeatable)")
    d.add_argument("--format", choices=("text", "markdown"), default="text")
    d.set_defaults(func=cmd_diff)

    c = sub.add_parser("certify", help="run what certification needs and print each "
                                       "profile's level (docs/certification.md)")
    c.add_argument("--profile", action="append", default=[], metavar="NAME|FILE",
                   help="profile to certify (repeatable; default: every installed built-in)")
    c.add_argument("--results", metavar="DIR", help="certify from an earlier run, run nothing")
    c.add_argument("--out", metavar="DIR", help="results directory of the certification run")
    c.add_argument("--transport", default="local", choices=TRANSPORTS,
                   help="as for `nfsconf run`")
    c.add_argument("--kernel", metavar="SPEC", help="knfsd: the kernel to boot, as for run")
    c.add_argument("--min-level", type=int, default=0, metavar="N",
                   help="exit 1 when a profile earns less than level N")
    c.set_defaults(func=cmd_certify)

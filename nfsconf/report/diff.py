"""The regression report between two runs (two kernel builds, two server versions): cells are
matched by scenario row x profile (x transport when a run holds more than one) and sorted
into regressions, fixes, newly skipped, XPASS, changed evidence, and cells only one run has.
A MUST regression is what gates CI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from nfsconf.report.expect import Expectations, xpass
from nfsconf.report.matrix import cell, env_rows
from nfsconf.report.results import Result, ResultsError, Run
from nfsconf.verdict import BAD, outcome_class

# section key -> title, in report order
SECTIONS = {
    "regression": "Regressions (passed in BASE, fail in NEW, or now open wrong objects)",
    "new-failure": "New failures, not gating (BASE skipped or lacked the cell, or an "
                   "expectations file lists it)",
    "fix": "Fixes (failed in BASE, pass in NEW)",
    "newly-skipped": "Newly skipped",
    "xpass": "Expected failures now passing (remove them from the expectations file)",
    "evidence": "Same verdict, changed evidence (another outcome class or handle type)",
    "info": "Same outcome, another error name (information only)",
    "only-base": "Cells NEW did not run",
    "only-new": "Cells new in NEW",
}

Key = tuple[str, str, str]


@dataclass
class Change:
    kind: str
    key: Key
    level: str
    base: Result | None
    new: Result | None
    detail: str = ""


@dataclass
class Diff:
    base: Run
    new: Run
    changes: list[Change] = field(default_factory=list)

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def must_regressions(self) -> list[Change]:
        return [c for c in self.of("regression") if c.level == "MUST"]


def signature(r: Result) -> dict[str, Any]:
    """What 'the same evidence' means: the outcome class of each decode (the same object, an
    error, another object), wrong objects, and the handle's type and size. Not which error
    (ESTALE and ENOENT are both accepted for an unlinked file, and which one comes is a
    matter of dentry timing), nor handle bytes or inode numbers, which differ per mount."""
    decodes = r.evidence.get("decodes") or {}
    return {
        "wrong_object": r.wrong_object,
        "handle": (r.handle or {}).get("type"), "handle_len": (r.handle or {}).get("len"),
        "decodes": {k: outcome_class(d.get("outcome")) for k, d in decodes.items()
                    if isinstance(d, dict)},
    }


def _errors(r: Result) -> dict[str, Any]:
    decodes = r.evidence.get("decodes") or {}
    return {"errno": r.errno,
            "decodes": {k: d.get("error") for k, d in decodes.items() if isinstance(d, dict)}}


def _changed(a: dict[str, Any], b: dict[str, Any]) -> str:
    out = []
    for k in a:
        if a[k] == b[k]:
            continue
        if k == "decodes":
            labels = sorted(set(a[k]) | set(b[k]))
            out += [f"decode {x}: {_fmt(a[k].get(x))} -> {_fmt(b[k].get(x))}"
                    for x in labels if a[k].get(x) != b[k].get(x)]
        else:
            out.append(f"{k}: {a[k]} -> {b[k]}")
    return "; ".join(out)


def _fmt(d: str | None) -> str:
    return "none" if d is None else str(d)


def _index(run: Run, with_transport: bool, rename: dict[str, str]) -> dict[Key, Result]:
    out: dict[Key, Result] = {}
    for r in run.results:
        if rename and r.profile not in rename:
            continue  # paired: only the renamed profiles, or they could collide with others
        out[(r.row, rename.get(r.profile, r.profile), r.transport if with_transport else "")] = r
    return out


def _classify(b: Result | None, n: Result | None) -> tuple[str, str] | None:
    if b is None:
        return ("new-failure", "not in BASE") if n and n.verdict in BAD else ("only-new", "")
    if n is None:
        return "only-base", ""
    if n.verdict in BAD:
        if b.verdict == "PASS":
            return "regression", ""
        if n.wrong_object and not b.wrong_object:
            return "regression", "now opens another object"
        if b.verdict in ("SKIP", "XFAIL"):
            return "new-failure", ("skipped in BASE" if b.verdict == "SKIP"
                                   else "an expected failure in BASE, not listed for NEW")
    if n.verdict == "XFAIL" and b.verdict == "PASS":
        return "new-failure", "fails, listed as expected: " + n.reason
    if xpass(n):  # before fixes: the entry to remove is the news
        return "xpass", f"listed in {n.evidence['expectation']['file']}"
    if b.verdict in BAD and n.verdict == "PASS":
        return "fix", ""
    if n.verdict == "SKIP" and b.verdict != "SKIP":
        return "newly-skipped", n.reason
    same = b.verdict == n.verdict or (b.verdict in BAD and n.verdict in BAD)
    if same and n.verdict != "SKIP":
        changed = _changed(signature(b), signature(n))
        if b.verdict != n.verdict:
            changed = f"verdict {b.verdict} -> {n.verdict}" + (f"; {changed}" if changed else "")
        if changed:
            return "evidence", changed
        if n.verdict != "SKIP" and (moved := _changed(_errors(b), _errors(n))):
            return "info", moved
    return None


def diff(base: Run, new: Run, expect: Expectations | None = None,
         pairs: dict[str, str] | None = None) -> Diff:
    """Compare NEW against BASE. `pairs` maps a BASE profile name onto a NEW one, to compare
    two profiles (two versions or configurations of one server) cell by cell."""
    pairs = pairs or {}
    for b_name, n_name in pairs.items():
        if not any(r.profile == b_name for r in base.results):
            raise ResultsError(f"--pair {b_name}:{n_name}: BASE has no profile {b_name}")
        if not any(r.profile == n_name for r in new.results):
            raise ResultsError(f"--pair {b_name}:{n_name}: NEW has no profile {n_name}")
    if expect is not None:
        base = Run(base.path, base.envs, expect.apply(base.env.get("kernel", ""), base.results))
        new = Run(new.path, new.envs, expect.apply(new.env.get("kernel", ""), new.results))
    # one transport each: compare across transports (local BASE vs knfsd NEW is a question)
    with_transport = any(len({r.transport for r in run.results}) > 1 for run in (base, new))
    b_cells = _index(base, with_transport, pairs)
    n_cells = _index(new, with_transport, {n: n for n in pairs.values()})
    out = Diff(base, new)
    for key in list(b_cells) + [k for k in n_cells if k not in b_cells]:
        b, n = b_cells.get(key), n_cells.get(key)
        kind = _classify(b, n)
        if kind is not None:
            # a wrong object on either side breaks a MUST, whatever the declared level
            level = "MUST" if any(r is not None and r.must for r in (b, n)) else "SHOULD"
            if kind[0] == "info":
                level = "info"
            out.changes.append(Change(kind[0], key, level, b, n, kind[1]))
    return out


def _verdict(r: Result | None) -> str:
    return cell(r) if r is not None else "-"


def render_diff(d: Diff, fmt: str = "text") -> str:
    md = fmt == "markdown"
    table_fmt = "github" if md else "simple"
    out = ["# nfsconf diff" if md else "nfsconf diff",
           f"BASE {d.base.path}\nNEW  {d.new.path}" if not md else
           f"BASE `{d.base.path}`, NEW `{d.new.path}`", ""]
    env = [[label, b, n if n != b else "(same)"]
           for (label, b), (_, n) in zip(env_rows(d.base.env), env_rows(d.new.env), strict=True)
           if label != "started"]
    out += [tabulate(env, ["", "BASE", "NEW"], tablefmt=table_fmt), ""]
    for kind, title in SECTIONS.items():
        changes = d.of(kind)
        if not changes:
            continue
        out.append(f"## {title}: {len(changes)}" if md else f"{title}: {len(changes)}")
        rows = [[c.level, c.key[0], _profile_label(c), _verdict(c.base), _verdict(c.new),
                 (c.detail or (c.new or c.base).reason)[:110]]  # type: ignore[union-attr]
                for c in sorted(changes, key=lambda c: (c.level != "MUST", c.key))]
        out += [tabulate(rows, ["level", "scenario", "profile", "BASE", "NEW", "detail"],
                         tablefmt=table_fmt), ""]
    if not d.changes:
        out += ["no differences", ""]
    must = len(d.must_regressions)
    out.append(f"{must} MUST regression(s), {len(d.of('regression')) - must} SHOULD; "
               f"{len(d.of('fix'))} fix(es); exit status {1 if must else 0}")
    return "\n".join(out) + "\n"


def _profile_label(c: Change) -> str:
    names = [c.base.profile if c.base else None, c.new.profile if c.new else None]
    label = c.key[1] if names[0] in (None, names[1]) or names[1] is None \
        else f"{names[0]} -> {names[1]}"
    return label + (f" ({c.key[2]})" if c.key[2] else "")

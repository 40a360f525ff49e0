"""The table of `nfsconf kernel walk`: patch by patch, the cells whose verdict changed from
the step before that ran. Pure: steps and their results in, text out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tabulate import tabulate

from nfsconf.report.matrix import cell
from nfsconf.report.results import Result

VERDICTS = ("PASS", "FAIL", "ERROR", "SKIP")
SHOWN = 8  # changes listed in the terminal row; the Markdown file lists them all
ABSENT = "-"


@dataclass(frozen=True)
class Change:
    cell: str  # ID/variant profile [transport]
    before: str  # the matrix's text of the cell (verdict, errno, WRONG-OBJ), ABSENT if none
    after: str


@dataclass
class StepRow:
    number: int
    patch: str
    release: str | None = None
    error: str | None = None  # the patch did not apply or did not build
    run: str | None = None  # its run directory
    results: list[Result] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def counts(self) -> str:
        n = Counter(r.verdict for r in self.results)
        return "/".join(str(n.get(v, 0)) for v in VERDICTS)


def _key(r: Result) -> str:
    return f"{r.row} {r.profile} [{r.transport}]"


def changes(before: list[Result], after: list[Result]) -> list[Change]:
    """Cells whose verdict (or errno, or wrong object) differs, and cells only one side has,
    in the order of AFTER then BEFORE."""
    old = {_key(r): cell(r) for r in before}
    new = {_key(r): cell(r) for r in after}
    out = [Change(k, old.get(k, ABSENT), v) for k, v in new.items() if old.get(k) != v]
    out += [Change(k, v, ABSENT) for k, v in old.items() if k not in new]
    return out


def compare(rows: list[StepRow]) -> None:
    """Fill each row's changes against the last row before it that ran."""
    last: StepRow | None = None
    for row in rows:
        if row.error is not None or row.run is None:
            continue
        row.changes = changes(last.results, row.results) if last else []
        last = row


def _what(row: StepRow, limit: int | None) -> str:
    if row.error is not None:
        return row.error.splitlines()[0] + (" (see walk.md)" if "\n" in row.error else "")
    if row.number == 0 or row.run is None:
        return "the base: every later step is compared with the one before it"
    if not row.changes:
        return "no verdict changed"
    shown = row.changes if limit is None else row.changes[:limit]
    text = "\n".join(f"{c.cell}: {c.before} -> {c.after}" for c in shown)
    more = len(row.changes) - len(shown)
    return text + (f"\n... and {more} more (walk.md)" if more else "")


def terminal(rows: list[StepRow]) -> str:
    table = [[r.number, r.patch[:48], r.release or "-", r.counts if r.run else "-",
              _what(r, SHOWN)] for r in rows]
    return tabulate(table, ["step", "patch", "kernel", "P/F/E/S", "changed from the step before"])


def markdown(rows: list[StepRow]) -> str:
    out = ["| step | patch | kernel | PASS/FAIL/ERROR/SKIP | run |", "|---|---|---|---|---|"]
    out += [f"| {r.number} | {r.patch} | {r.release or '-'} | {r.counts if r.run else '-'} | "
            f"{r.run or '-'} |" for r in rows]
    for r in rows:
        out.append(f"\n## Step {r.number}: {r.patch}\n")
        if r.error is not None:
            out.append("```\n" + r.error + "\n```")
        else:
            out.append(_what(r, None).replace("\n", "  \n"))
    return "\n".join(out) + "\n"

"""Expectations: known failures listed per kernel release and profile, the way kdevops keeps
expunge lists. A listed cell that fails shows as XFAIL; a listed cell that passes is an XPASS,
reported so the entry gets removed.

Layout: DIR/<kernel release>/<profile>.txt, and DIR/any/<profile>.txt for every kernel.
One entry a line: a scenario row (`ID`, `ID/variant`, or an fnmatch pattern such as
`RESTART*`), then optionally `# why`. Blank lines and lines starting with `#` are ignored."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace
from pathlib import Path

from nfsconf.report.results import Result, ResultsError

ANY = "any"
_ROW = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.*?\[\]/-]*$")


@dataclass(frozen=True)
class Entry:
    pattern: str
    comment: str
    file: str
    line: int

    def matches(self, row: str) -> bool:
        # `ID` covers every variant of the scenario
        return fnmatch.fnmatchcase(row, self.pattern) or row.startswith(self.pattern + "/")


def parse(text: str, file: str) -> list[Entry]:
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, comment = line.partition("#")
        pattern = pattern.strip()
        if not _ROW.match(pattern):
            raise ResultsError(f"{file}:{n}: not a scenario row: {pattern!r}")
        entries.append(Entry(pattern, comment.strip(), file, n))
    return entries


class Expectations:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ResultsError(f"{root}: no such expectations directory "
                               "(layout: DIR/<kernel release>/<profile>.txt, DIR/any/...)")
        self.root = root
        self._cache: dict[Path, list[Entry]] = {}

    def _file(self, path: Path) -> list[Entry]:
        if path not in self._cache:
            self._cache[path] = parse(path.read_text(encoding="utf-8"), str(path)) \
                if path.is_file() else []
        return self._cache[path]

    def entry(self, kernel: str, r: Result) -> Entry | None:
        for release in (kernel, ANY):
            for e in self._file(self.root / release / f"{r.profile}.txt"):
                if e.matches(r.row):
                    return e
        return None

    def apply(self, kernel: str, results: list[Result]) -> list[Result]:
        """Listed failures become XFAIL; every listed cell keeps the entry in its evidence
        (`expectation`), so a listed cell that passed can be reported as XPASS."""
        out = []
        for r in results:
            e = self.entry(kernel, r)
            if e is None:
                out.append(r)
                continue
            note = {"file": e.file, "line": e.line, "comment": e.comment, "was": r.verdict}
            evidence = {**r.evidence, "expectation": note}
            if r.verdict in ("FAIL", "ERROR"):
                why = f"expected ({e.comment})" if e.comment else "expected"
                out.append(replace(r, verdict="XFAIL", evidence=evidence,
                                   reason=f"{why}; {r.verdict}: {r.reason}"))
            else:
                out.append(replace(r, evidence=evidence))
        return out


def xpass(r: Result) -> bool:
    """A cell listed as a known failure that passed."""
    return r.verdict == "PASS" and "expectation" in r.evidence

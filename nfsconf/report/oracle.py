"""pynfs beside the cold replays: for each export, a pynfs code and the nfsconf scenario that
does the same operation on a handle taken before drop_caches, on one line each
("pynfs PUTFH1r PASS, cold PUTFH FAIL NFS4ERR_STALE"). pynfs presents every handle while the
server still caches the object; the pair shows what that leaves unseen."""

from __future__ import annotations

from dataclasses import dataclass

from nfsconf.report.matrix import Column, column_of, columns
from nfsconf.report.results import Result


@dataclass(frozen=True)
class Pair:
    pynfs: str  # the pynfs row: PYNFS-<code>/<version>
    cold: str  # the nfsconf row replaying it cold
    what: str  # the operation, for the line


PAIRS = (
    Pair("PYNFS-PUTFH1r/4.0", "V4-COLD-PUTFH/file", "PUTFH of a file"),
    Pair("PYNFS-PUTFH1r/4.1", "V4-COLD-PUTFH/file", "PUTFH of a file"),
    Pair("PYNFS-PUTFH1d/4.0", "V4-COLD-PUTFH/dir", "PUTFH of a directory"),
    Pair("PYNFS-PUTFH1d/4.1", "V4-COLD-PUTFH/dir", "PUTFH of a directory"),
    Pair("PYNFS-LOOKP1/4.0", "NFS-LOOKUPP", "LOOKUPP of a directory"),
    Pair("PYNFS-LKPP1d/4.1", "NFS-LOOKUPP", "LOOKUPP of a directory"),
    Pair("PYNFS-SVFH2r/4.0", "V4-COLD-SAVEFH", "SAVEFH, RESTOREFH of a file"),
)


@dataclass(frozen=True)
class Line:
    column: str  # the export: profile [transport] kernel
    pair: Pair
    pynfs: Result
    cold: Result

    @property
    def disagree(self) -> bool:
        return self.pynfs.verdict == "PASS" and self.cold.verdict in ("FAIL", "ERROR")

    def text(self) -> str:
        code = self.pair.pynfs.removeprefix("PYNFS-")
        return (f"{self.column}: {self.pair.what}: pynfs {code} {self.pynfs.verdict}, cold "
                f"{self.pair.cold} {_verdict(self.cold)}")


def _verdict(r: Result) -> str:
    return f"{r.verdict} {r.errno}" if r.errno and r.verdict != "PASS" else r.verdict


def lines(results: list[Result]) -> list[Line]:
    """Every pair both of whose rows ran on the same export, export by export."""
    cells: dict[tuple[Column, str], Result] = {(column_of(r), r.row): r for r in results}
    out = []
    for col, title in columns(results).items():
        for p in PAIRS:
            a, b = cells.get((col, p.pynfs)), cells.get((col, p.cold))
            if a is not None and b is not None:
                out.append(Line(title, p, a, b))
    return out


def table(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    header = ["export", "operation", "pynfs", "verdict", "cold replay", "verdict"]
    body = [[x.column, x.pair.what, x.pair.pynfs.removeprefix("PYNFS-"), x.pynfs.verdict,
             x.pair.cold, _verdict(x.cold)] for x in lines(results)]
    return header, body

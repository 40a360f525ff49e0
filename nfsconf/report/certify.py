"""Certification levels of a FUSE server for NFS re-export, computed from a run's results.
docs/certification.md is the human text of LEVELS; keep the two in step."""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any

from nfsconf.catalog import by_level, kernel_only
from nfsconf.report.matrix import cell
from nfsconf.report.results import Result, ResultsError, Run


@dataclass(frozen=True)
class Level:
    number: int
    name: str
    must: tuple[str, ...]  # scenario IDs: every cell PASS (or SKIP: not applicable)
    should: tuple[str, ...] = ()  # reported on the certificate, never blocking


LEVEL_NAMES = {
    0: "not exportable",
    1: "warm handles only",
    2: "survives cache drops (files, directories, parent lookup)",
    3: "survives server restart (remount)",
    # restart in place needs a server that hands its /dev/fuse fd over the way nfsconf's
    # reference server does
    4: "survives live restart",
    # only on a kernel that offers FUSE_LOOKUP_HANDLE: elsewhere these SKIP, and a level of
    # nothing but SKIP is not earned
    5: "handles from LOOKUP_HANDLE survive restart",
}
# which scenarios a level needs comes from their markers (scenario(..., certify=N))
LEVELS: tuple[Level, ...] = tuple(Level(n, name, *by_level(n)) for n, name in LEVEL_NAMES.items())
# What the kernel does with a hostile (reference) server or an older protocol minor:
# kernel conformance, no level.
KERNEL_ONLY: tuple[str, ...] = kernel_only()


def levels_markdown() -> str:
    """docs/certification.md's table of the levels, made from LEVELS."""
    rows = ["| level | name | MUST scenarios | SHOULD scenarios |", "|---|---|---|---|"]
    for lv in LEVELS:
        must = " ".join(f"`{s}`" for s in lv.must) or "—"
        should = " ".join(f"`{s}`" for s in lv.should) or "—"
        rows.append(f"| {lv.number} | {lv.name} | {must} | {should} |")
    return "\n".join(rows)


@dataclass
class Item:
    scenario: str
    cell: str
    reason: str


@dataclass
class LevelStatus:
    number: int
    name: str
    earned: bool
    blocking: list[Item] = field(default_factory=list)  # what to fix to earn it
    advisories: list[Item] = field(default_factory=list)  # SHOULD scenarios that failed
    not_applicable: list[Item] = field(default_factory=list)  # skipped MUST cells


@dataclass
class Certificate:
    profile: str
    server_version: str
    level: int
    level_name: str
    kernel: str
    kernel_image: dict[str, Any]
    fuse_protocol: str
    transport: str
    nfsconf: str
    issued: str
    results: str
    levels: list[LevelStatus]
    warnings: list[Item]  # wrong objects above the earned level
    unassigned: list[str] = field(default_factory=list)  # run's scenarios in no level

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _item(r: Result) -> Item:
    return Item(r.row, cell(r), r.reason[:200])


def _status(level: Level, mine: list[Result]) -> LevelStatus:
    st = LevelStatus(level.number, level.name, earned=True)
    for sid in level.must:
        cells = [r for r in mine if r.id == sid]
        if not cells:
            st.blocking.append(Item(sid, "not run", "the run holds no cell of this scenario"))
        for r in cells:
            if r.verdict == "SKIP":
                st.not_applicable.append(_item(r))
            elif r.verdict != "PASS":
                st.blocking.append(_item(r))
    must_cells = [r for r in mine if r.id in level.must]
    if level.must and must_cells and all(r.verdict == "SKIP" for r in must_cells):
        ran = [sid for sid in level.must if any(r.id == sid for r in must_cells)]
        st.blocking.append(Item(",".join(ran), "all SKIP", "nothing of it could be run"))
    st.advisories = [_item(r) for r in mine if r.id in level.should
                     and r.verdict in ("FAIL", "ERROR", "XFAIL")]
    st.earned = not st.blocking
    return st


def certify(run: Run, profile: str) -> Certificate:
    mine = [r for r in run.results if r.profile == profile]
    if not mine:
        have = sorted({r.profile for r in run.results})
        raise ResultsError(f"{run.path}: no results of profile {profile} "
                           f"(it has: {', '.join(have) or 'none'})")
    transports = sorted({r.transport for r in mine})
    statuses = [_status(lv, mine) for lv in LEVELS]
    level = 0
    for st in statuses[1:]:
        if not st.earned:
            break
        level = st.number
    earned_ids = {sid for lv in LEVELS[:level + 1] for sid in lv.must + lv.should}
    warnings = [_item(r) for r in mine if r.wrong_object and r.id not in earned_ids]
    known = {sid for lv in LEVELS for sid in lv.must + lv.should}
    unassigned = sorted({r.id for r in mine} - known)
    env = run.env
    return Certificate(
        profile=profile, server_version=str((env.get("profiles") or {}).get(profile, "?")),
        level=level, level_name=LEVELS[level].name, kernel=str(env.get("kernel", "?")),
        kernel_image=env.get("kernel_image") or {},
        fuse_protocol=str((env.get("fuse") or {}).get("protocol", "?")),
        transport=",".join(transports), nfsconf=str(env.get("nfsconf", "?")),
        issued=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        results=str(run.path), levels=statuses, warnings=warnings, unassigned=unassigned)


def render_certificate(c: Certificate) -> str:
    """The certificate for a terminal: the level, where it was earned, what to fix for the
    next level in detail, the levels above in one line each."""
    image = c.kernel_image.get("sha256") or c.kernel_image.get("build_id") or ""
    lines = [f"{c.profile} ({c.server_version}): LEVEL {c.level} — {c.level_name}",
             f"  earned on kernel {c.kernel}" + (f" [{image[:16]}]" if image else "")
             + f", FUSE {c.fuse_protocol}, transport {c.transport}, nfsconf {c.nfsconf}"]
    for st in c.levels[1:]:
        if st.earned:
            extra = [f"{len(st.not_applicable)} n/a"] if st.not_applicable else []
            extra += [f"SHOULD failed: {', '.join(i.scenario for i in st.advisories)}"] \
                if st.advisories else []
            lines.append(f"  level {st.number} earned: {st.name}"
                         + (f" ({'; '.join(extra)})" if extra else ""))
        elif st.number == c.level + 1:
            lines.append(f"  level {st.number} NOT earned: {st.name}; to reach it, fix:")
            lines += [f"    - {i.scenario}: {i.cell}  {i.reason}"[:150] for i in st.blocking]
        else:
            rows = ", ".join(dict.fromkeys(i.scenario for i in st.blocking))
            lines.append(f"  level {st.number} NOT earned: {st.name}; blocked by {rows}"[:150])
    if c.warnings:
        rows = ", ".join(i.scenario for i in c.warnings)
        lines.append(f"  WARNING: handles opened other objects in {rows}")
    if c.unassigned:
        lines.append(f"  not part of any level (not certified): {', '.join(c.unassigned)}")
    return "\n".join(lines)

"""The conformance matrix (scenario rows x profile columns, one short cell each) and the
environment rows every view prints."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tabulate import tabulate

from nfsconf.report.results import Result


def cell(r: Result) -> str:
    text = r.verdict
    if r.wrong_object:
        text = f"{r.verdict} WRONG-OBJ"  # XFAIL when an expectations file lists it
    elif r.errno and r.verdict in ("FAIL", "ERROR"):
        text += f" {r.errno}"
    elif r.verdict == "ERROR":
        text += " " + r.reason.split(":")[0][:18]
    if r.claim_broken:
        text += " !"
    return text


Column = tuple[str, str, str]  # profile, transport, kernel


def column_of(r: Result) -> Column:
    return r.profile, r.transport, r.kernel


def columns(results: list[Result]) -> dict[Column, str]:
    """(profile, transport, kernel) -> column title; the transport shows only when a run has
    several (knfsd runs each lab under no_subtree_check and subtree_check), the kernel only
    when merged runs of several kernels are shown together."""
    keys = list(dict.fromkeys(column_of(r) for r in results))
    transports = len({k[1] for k in keys}) > 1
    kernels = len({k[2] for k in keys}) > 1
    return {k: k[0] + (f" [{k[1]}]" if transports else "") + (f" {k[2]}" if kernels else "")
            for k in keys}


# Why a whole row SKIPs (the start of its reason), and the command that runs it.
SKIP_HINTS: dict[str, str] = {
    "NFS wire check": "nfsconf run --transport knfsd --kernel uml:debian:sid",
    "exportfs-level check": "nfsconf run --transport local (or knfsd: its [local] column)",
    "LOOKUP_HANDLE not negotiated": "nfsconf run --transport knfsd --profile ref-lh --kernel "
                                    "$(nfsconf kernel build --arch um --series "
                                    "../shared/kernels/lookup-handle-v2/series)",
    "needs the reference server": "nfsconf run --profile ref-stable --profile ref-lh",
    "no restart without unmount": "declare the profile's [restart] commands "
                                  "(docs/certification.md, level 4)",
}


def skip_reason(r: Result) -> str:
    """What a SKIP is for, without the detail after the first ':' or ';' (which names the
    profile or the kernel)."""
    return re.split(r"[:;]", r.reason, maxsplit=1)[0].strip() or "skipped"


def matrix_rows(results: list[Result], fold_skips: bool = False
                ) -> tuple[list[str], list[list[str]]]:
    """The matrix; with FOLD_SKIPS, rows where every cell SKIPs for one reason are left
    out (skipped_rows says them once)."""
    cols = columns(results)
    folded = {row for row, _ in skipped_rows(results)} if fold_skips else set()
    levels = row_levels(results)
    rows: dict[tuple[str, str], dict[Column, str]] = {}
    for r in results:
        if r.row not in folded:
            rows.setdefault((r.row, levels[r.row]), {})[column_of(r)] = cell(r)
    header = ["scenario", "level", *cols.values()]
    body = [[row, level, *(cells.get(k, "") for k in cols)]
            for (row, level), cells in rows.items()]
    return header, body


def skipped_rows(results: list[Result]) -> list[tuple[str, str]]:
    """(row, reason) of every row in which each cell SKIPs, for one and the same reason."""
    reasons: dict[str, set[str]] = {}
    for r in results:
        reasons.setdefault(r.row, set()).add(skip_reason(r) if r.verdict == "SKIP" else "")
    return [(row, next(iter(why))) for row, why in reasons.items()
            if len(why) == 1 and "" not in why]


def skip_lines(results: list[Result]) -> str:
    """One line per reason a set of whole rows SKIPs, with the command that would run them."""
    by_reason: dict[str, list[str]] = {}
    for row, why in skipped_rows(results):
        by_reason.setdefault(why, []).append(row)
    lines = []
    for why, rows in by_reason.items():
        ids = list(dict.fromkeys(row.split("/", 1)[0] for row in rows))
        hint = next((h for start, h in SKIP_HINTS.items() if why.startswith(start)), None)
        many = f"{len(rows)} row" + ("s" if len(rows) != 1 else "")
        lines.append(f"SKIP in every column ({many}: {', '.join(ids)}): {why}"
                     + (f"; to run them: {hint}" if hint else ""))
    return "\n".join(lines)


def row_levels(results: list[Result]) -> dict[str, str]:
    """row -> its level(s), "MUST/SHOULD" where cells of one row differ; in one pass (a
    search per row made the matrix of a 5,000-cell run take seconds)."""
    seen: dict[str, set[str]] = {}
    for r in results:
        seen.setdefault(r.row, set()).add(r.level)
    return {row: "/".join(sorted(levels)) for row, levels in seen.items()}


def summary_rows(results: list[Result]) -> tuple[list[str], list[list[object]]]:
    header = ["profile", "PASS", "FAIL", "ERROR", "SKIP", "XFAIL", "MUST failed",
              "wrong objects", "claims broken"]
    body: list[list[object]] = []
    for key, p in columns(results).items():
        mine = [r for r in results if column_of(r) == key]
        counts = Counter(r.verdict for r in mine)
        must = sum(1 for r in mine if r.must and r.verdict in ("FAIL", "ERROR"))
        body.append([p, *(counts.get(v, 0) for v in ("PASS", "FAIL", "ERROR", "SKIP", "XFAIL")),
                     must, sum(r.wrong_object for r in mine), sum(r.claim_broken for r in mine)])
    return header, body


def render(results: list[Result], fmt: str = "simple") -> str:
    if not results:
        return "(no results)"
    header, body = matrix_rows(results, fold_skips=True)
    sheader, sbody = summary_rows(results)
    skips = skip_lines(results)
    legend = ("cells: verdict and errno; WRONG-OBJ = a handle opened another object (always a "
              "MUST failure); ! = the profile claims what this scenario checks")
    return ((tabulate(body, header, tablefmt=fmt) + "\n\n" if body else "")
            + (skips + "\n\n" if skips else "")
            + tabulate(sbody, sheader, tablefmt=fmt) + "\n\n" + legend)


def env_rows(env: dict[str, Any]) -> list[tuple[str, str]]:
    """The environment a run was made on, as label/value pairs every view prints."""
    fuse = env.get("fuse") or {}
    image = env.get("kernel_image") or {}
    ident = image.get("sha256") or image.get("build_id")
    kernel = env.get("kernel", "?") + (f" ({'sha256' if image.get('sha256') else 'build-id'} "
                                       f"{ident[:16]})" if ident else "")
    servers = ", ".join(f"{p} {v}" for p, v in (env.get("profiles") or {}).items())
    return [("kernel", kernel),
            ("FUSE protocol", fuse.get("protocol") or fuse.get("error", "?")),
            ("LOOKUP_HANDLE", _lookup_handle(fuse)),
            ("transport", str(env.get("transport", "?"))),
            ("servers", servers or "?"),
            ("nfsconf", str(env.get("nfsconf", "?"))),
            ("started", str(env.get("started", "?")))]


def _lookup_handle(fuse: dict[str, Any]) -> str:
    lh = fuse.get("lookup_handle")
    if not lh:
        return "?"
    if lh.get("dialect"):
        return f"offered: {lh['dialect']}, max_handle_sz {lh.get('max_handle_sz')}"
    return f"not offered ({lh.get('why', '')})"


def progress_line(r: Result, done: int, total: int) -> str:
    """The line a run prints as each cell ends."""
    detail = f"  {r.errno}" if r.errno else ""
    flag = "  (claim broken)" if r.claim_broken else ""
    why = f"  {r.reason}" if r.verdict != "PASS" and r.reason else ""
    count = f"[{done:>{len(str(total))}}/{total}]"
    where = r.profile if r.transport == "local" else f"{r.profile} [{r.transport}]"
    return f"{count} {r.row:<24} {where:<18} {r.verdict:<5}{detail}{flag}{why}"[:200]

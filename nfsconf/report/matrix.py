"""The conformance matrix (scenario rows x profile columns, one short cell each) and the
environment rows every view prints."""

from __future__ import annotations

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


def matrix_rows(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    cols = columns(results)
    rows: dict[tuple[str, str], dict[Column, str]] = {}
    for r in results:
        rows.setdefault((r.row, _level(results, r.row)), {})[column_of(r)] = cell(r)
    header = ["scenario", "level", *cols.values()]
    body = [[row, level, *(cells.get(k, "") for k in cols)]
            for (row, level), cells in rows.items()]
    return header, body


def _level(results: list[Result], row: str) -> str:
    return "/".join(sorted({r.level for r in results if r.row == row}))


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
    header, body = matrix_rows(results)
    sheader, sbody = summary_rows(results)
    legend = ("cells: verdict and errno; WRONG-OBJ = a handle opened another object (always a "
              "MUST failure); ! = the profile claims what this scenario checks")
    return (tabulate(body, header, tablefmt=fmt) + "\n\n" + tabulate(sbody, sheader, tablefmt=fmt)
            + "\n\n" + legend)


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

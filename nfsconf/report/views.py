"""Views of a run for people and for CI: Markdown and JUnit XML, and the one call that writes
every view beside results.jsonl. Each is computed from the results file alone."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from nfsconf.report import oracle
from nfsconf.report.matrix import (
    column_of,
    env_rows,
    matrix_rows,
    render,
    skip_lines,
    summary_rows,
)
from nfsconf.report.results import Result, Run

FORMATS = ("terminal", "markdown", "junit", "html")
FILES = {"terminal": "matrix.txt", "markdown": "report.md", "junit": "junit.xml",
         "html": "report.html"}


def terminal(run: Run) -> str:
    head = "\n".join(f"{k:<14} {v}" for k, v in env_rows(run.env))
    return head + "\n\n" + render(run.results) + pynfs_lines(run.results)


def pynfs_lines(results: list[Result]) -> str:
    """The pairs of pynfs codes and cold replays, one line each, for the terminal."""
    found = oracle.lines(results)
    if not found:
        return ""
    return "\n\npynfs beside the cold replays:\n" + "\n".join(
        ("  ! " if x.disagree else "    ") + x.text() for x in found)


def markdown(run: Run) -> str:
    out = ["# nfsconf conformance report", ""]
    out += [tabulate(env_rows(run.env), ["", ""], tablefmt="github"), ""]
    if not run.results:
        return "\n".join(out + ["(no results)", ""])
    header, body = matrix_rows(run.results, fold_skips=True)
    out += ["## Matrix", "", tabulate(body, header, tablefmt="github"), ""]
    skips = skip_lines(run.results)
    if skips:
        out += [f"- {line}" for line in skips.splitlines()] + [""]
    sheader, sbody = summary_rows(run.results)
    out += ["## Summary", "", tabulate(sbody, sheader, tablefmt="github"), ""]
    pheader, pbody = oracle.table(run.results)
    if pbody:
        out += ["## pynfs beside the cold replays", "", "pynfs presents each handle while the "
                "server caches the object; the cold replay presents it after drop_caches.",
                "", tabulate(pbody, pheader, tablefmt="github"), ""]
    bad = [r for r in run.results if r.verdict in ("FAIL", "ERROR")]
    if bad:
        out += ["## Failures", ""]
        for r in sorted(bad, key=lambda r: (r.level != "MUST", r.profile, r.row)):
            what = "WRONG OBJECT" if r.wrong_object else (r.errno or r.verdict)
            handle = f" — handle `{r.handle['type']}` `{r.handle['hex']}`" if r.handle else ""
            out.append(f"- **{r.level}** `{r.row}` on `{r.profile}`: {r.verdict} {what}"
                       f"{handle} — {_md(r.reason)}")
        out.append("")
    out.append("Cells: verdict and errno; WRONG-OBJ = a handle opened another object (always a "
               "MUST failure); ! = the profile claims what this scenario checks.")
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def junit(run: Run) -> str:
    """One testsuite per profile x transport, one testcase per cell; FAIL is a <failure>,
    ERROR an <error>, SKIP and XFAIL are <skipped>."""
    root = ET.Element("testsuites", name="nfsconf")
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in run.results:
        groups.setdefault(column_of(r), []).append(r)
    for (profile, transport, kernel), cells in groups.items():
        counts = Counter(r.verdict for r in cells)
        name = f"nfsconf.{transport}.{profile}" + (f".{kernel}" if len(
            {k for _, _, k in groups}) > 1 else "")
        suite = ET.SubElement(
            root, "testsuite", name=name, tests=str(len(cells)),
            failures=str(counts["FAIL"]), errors=str(counts["ERROR"]),
            skipped=str(counts["SKIP"] + counts["XFAIL"]),
            time=f"{sum(r.duration for r in cells):.3f}",
            timestamp=str(run.env.get("started", "")).split("+")[0])
        props = ET.SubElement(suite, "properties")
        for label, value in env_rows(run.env):
            ET.SubElement(props, "property", name=label, value=value)
        for r in cells:
            case = ET.SubElement(suite, "testcase", classname=f"nfsconf.{transport}.{profile}",
                                 name=f"{r.row} [{r.level}]", time=f"{r.duration:.3f}")
            message = r.reason or r.verdict
            if r.verdict == "FAIL":
                kind = "WRONG-OBJ" if r.wrong_object else (r.errno or "FAIL")
                ET.SubElement(case, "failure", message=message, type=kind).text = _detail(r)
            elif r.verdict == "ERROR":
                ET.SubElement(case, "error", message=message,
                              type=r.errno or "ERROR").text = _detail(r)
            elif r.verdict in ("SKIP", "XFAIL"):
                prefix = "expected failure: " if r.verdict == "XFAIL" else ""
                ET.SubElement(case, "skipped", message=prefix + message)
            ET.SubElement(case, "system-out").text = json.dumps(
                {"handle": r.handle, "evidence": r.evidence}, default=str)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _detail(r: Result) -> str:
    lines = [f"{r.level} {r.id} {r.variant}".rstrip(), r.reason]
    if r.errno:
        lines.append(f"errno: {r.errno}")
    if r.handle:
        lines.append(f"handle: type {r.handle.get('type')} bytes {r.handle.get('hex')}")
    return "\n".join(lines)


def write_views(run: Run, out: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write the chosen views into `out`; returns their paths."""
    from nfsconf.report.html import html

    makers = {"terminal": lambda: render(run.results) + pynfs_lines(run.results) + "\n",
              "markdown": lambda: markdown(run),
              "junit": lambda: junit(run), "html": lambda: html(run)}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out / FILES[fmt]
        path.write_text(makers[fmt](), encoding="utf-8")
        written.append(path)
    return written

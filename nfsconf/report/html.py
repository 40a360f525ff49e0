"""One self-contained HTML file: the matrix as a grid coloured by verdict; each cell links to
its evidence (errno, handle bytes with named fields, decodes, trace excerpt), shown in a side
panel by CSS `:target`. No script is needed to read it (CI artifact viewers often block
scripts); the one small script only records how many cells the browser laid out."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from nfsconf.report import oracle
from nfsconf.report.matrix import (
    Column,
    cell,
    column_of,
    columns,
    env_rows,
    row_levels,
    summary_rows,
)
from nfsconf.report.results import Result, Run

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:20px;margin:0 0 .5em} h2{font-size:16px;margin:1.2em 0 .4em}
table{border-collapse:collapse} th,td{padding:3px 8px;border:1px solid #ccc;text-align:left}
table.env{max-width:70em} table.env td:first-child{font-weight:600;white-space:nowrap}
table.grid th,table.grid td.cell{white-space:nowrap}
table.grid td.cell{padding:0;min-width:7.5em;text-align:center}
table.grid td.cell a{display:block;padding:4px 6px;color:inherit;text-decoration:none}
table.grid td.cell:hover{outline:2px solid #000}
td.PASS{background:#2e9d4a;color:#fff} td.FAIL{background:#f4a09a}
td.FAIL.MUST{background:#c62828;color:#fff} td.FAIL.wrong{background:#5c0000;color:#fff;
font-weight:700} td.ERROR{background:#ef8c00;color:#fff} td.SKIP{background:#c8c8c8}
td.XFAIL{background:#9b88d3;color:#fff} td.none{background:#fff}
td.level{font-size:12px;color:#555}
table.legend-grid{margin-top:.6em} table.legend-grid td{font-size:12px}
.ev{display:none} .ev:target{display:block;position:fixed;top:0;right:0;width:48%;
height:100%;overflow:auto;background:#fff;border-left:3px solid #333;padding:1em 1.5em;
box-shadow:-4px 0 12px rgba(0,0,0,.25);box-sizing:border-box}
.ev .close{float:right;font-size:20px;text-decoration:none}
pre{background:#f5f5f5;padding:.5em;overflow:auto;max-height:22em;font-size:12px}
code{font-size:12px}
"""

SCRIPT = """
// Only a record for tests and tools: how many grid cells the browser laid out, and which
// evidence panel (if any) it shows.
addEventListener('load', () => {
  const shown = el => el.offsetWidth > 0 && el.offsetHeight > 0;
  const root = document.documentElement.dataset;
  root.visibleCells = [...document.querySelectorAll('table.grid td.cell')].filter(shown).length;
  root.evidenceShown = [...document.querySelectorAll('section.ev')].filter(shown)
    .map(e => e.id).join(' ');
});
"""


def _classes(r: Result) -> str:
    return " ".join(["cell", r.verdict, r.level] + (["wrong"] if r.wrong_object else []))


def _grid(results: list[Result]) -> str:
    cols = columns(results)
    rows: dict[str, dict[Column, int]] = {}
    for i, r in enumerate(results):
        rows.setdefault(r.row, {})[column_of(r)] = i
    head = "".join(f"<th>{escape(title)}</th>" for title in cols.values())
    out = [f'<table class="grid"><thead><tr><th>scenario</th><th>level</th>{head}</tr></thead>'
           "<tbody>"]
    levels = row_levels(results)
    for row, cells in rows.items():
        tds = []
        for col in cols:
            i = cells.get(col)
            if i is None:
                tds.append('<td class="none"></td>')
                continue
            r = results[i]
            tds.append(f'<td class="{_classes(r)}" title="{escape(r.reason)}">'
                       f'<a href="#c{i}">{escape(cell(r))}</a></td>')
        out.append(f"<tr><th>{escape(row)}</th><td class=\"level\">"
                   f"{escape(levels[row])}</td>{''.join(tds)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    head = f"<thead><tr>{th}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}">{head}<tbody>{body}</tbody></table>'


def _handle(label: str, h: dict[str, Any]) -> str:
    data = h.get("hex", "")
    words = " ".join(data[i:i + 8] for i in range(0, len(data), 8))
    fields = h.get("fields") or {}
    rows = [[k, f"{v} (0x{v:x})" if isinstance(v, int) and not isinstance(v, bool) else v]
            for k, v in fields.items() if k != "hex"]
    if "fields_error" in h:
        rows.append(["decode error", h["fields_error"]])
    return (f"<h4>handle {escape(label)}: type {escape(str(h.get('type')))}, "
            f"{escape(str(h.get('len')))} bytes</h4><pre>{escape(words)}</pre>"
            + (_table(["field", "value"], rows) if rows else ""))


def _ident(x: dict[str, Any] | None) -> str:
    if not x:
        return ""
    kind = "dir" if x.get("is_dir") else "file"
    return f"ino {x.get('st_ino')} dev {x.get('st_dev')} {kind} {str(x.get('marker')).strip()}"


def _decodes(decodes: dict[str, Any]) -> str:
    rows = [[label, d.get("outcome"), d.get("error") or "", _ident(d.get("expected")),
             _ident(d.get("got"))] for label, d in decodes.items() if isinstance(d, dict)]
    return "<h4>decodes</h4>" + _table(["decode", "outcome", "error", "expected", "got"], rows)


def _evidence(i: int, r: Result) -> str:
    ev = dict(r.evidence)
    parts = [f'<section class="ev" id="c{i}"><a class="close" href="#" title="close">&times;</a>',
             f"<h3>{escape(r.row)} — {escape(r.profile)} ({escape(r.transport)})</h3>",
             _table(["verdict", "level", "errno", "claim", "duration"],
                    [[cell(r), r.level, r.errno or "", (r.claim or "")
                      + (" (claimed)" if r.claimed else ""), f"{r.duration:.3f} s"]])]
    if r.reason:
        parts.append(f"<p><b>reason:</b> {escape(r.reason)}</p>")
    handles = ev.pop("handles", None) or ({"": r.handle} if r.handle else {})
    parts += [_handle(label, h) for label, h in handles.items() if isinstance(h, dict)]
    decodes = ev.pop("decodes", None)
    if isinstance(decodes, dict) and decodes:
        parts.append(_decodes(decodes))
    for key in ("trace", "server_log", "teardown"):
        value = ev.pop(key, None)
        if value:
            text = "\n".join(map(str, value)) if isinstance(value, list) else str(value)
            excerpt = "\n".join(text.splitlines()[:60])
            parts.append(f"<h4>{key.replace('_', ' ')} (excerpt)</h4><pre>{escape(excerpt)}</pre>")
    if ev:
        parts.append("<h4>other evidence</h4><pre>"
                     + escape(json.dumps(ev, indent=1, default=str)) + "</pre>")
    parts.append(f"<p><small>pytest node: <code>{escape(r.node)}</code></small></p></section>")
    return "".join(parts)


def html(run: Run) -> str:
    results = run.results
    sheader, sbody = summary_rows(results) if results else ([], [])
    legend = _legend()
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>nfsconf report — {escape(str(run.env.get('kernel', '')))}</title>"
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>"
        "<h1>nfsconf conformance report</h1>"
        + _table(["", ""], [list(x) for x in env_rows(run.env)], "env")
        + "<h2>Matrix</h2>"
        + (_grid(results) if results else "<p>(no results)</p>")
        + legend
        + "<p><small>Click a cell for its evidence. WRONG-OBJ = a handle opened another object "
          "(always a MUST failure); ! = the profile claims what this scenario checks.</small></p>"
        + "<h2>Summary</h2>" + _table(sheader, sbody)
        + _pynfs(results)
        + "".join(_evidence(i, r) for i, r in enumerate(results))
        + "</body></html>\n")


def _pynfs(results: list[Result]) -> str:
    header, body = oracle.table(results)
    if not body:
        return ""
    return ("<h2>pynfs beside the cold replays</h2><p>pynfs presents each handle while the "
            "server caches the object; the cold replay presents it after drop_caches.</p>"
            + _table(header, body))


def _legend() -> str:
    items = [("PASS", "PASS"), ("FAIL MUST", "MUST failed"), ("FAIL", "SHOULD failed"),
             ("FAIL MUST wrong", "WRONG-OBJ"), ("ERROR", "ERROR"), ("SKIP", "SKIP"),
             ("XFAIL", "XFAIL")]
    cells = "".join(f'<td class="{c}">{t}</td>' for c, t in items)
    return f'<table class="legend-grid"><tr>{cells}</tr></table>'

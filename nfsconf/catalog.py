"""The scenario catalog: what the `scenario(...)` markers in scenarios/*.py say, read from
the source (no import, no pytest). README's scenario table, the certification levels and
`nfsconf scenarios` are all made from it, so a scenario is described in one place.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import nfsconf

SCENARIOS = Path(nfsconf.__file__).resolve().parent.parent / "scenarios"


@dataclass(frozen=True)
class ScenarioInfo:
    id: str
    level: str  # MUST | SHOULD
    certify: int | None  # the certification level it counts for; None: kernel conformance
    advisory: bool  # reported on that level's certificate, never blocking it
    where: str  # local | nfs | any
    claim: str | None
    what: str  # the docstring's first paragraph, without the "ID: " lead
    file: str
    function: str


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _marker(dec: ast.expr) -> ast.Call | None:
    """`@scenario(...)` (or the older `@pytest.mark.scenario(...)`)."""
    if not isinstance(dec, ast.Call):
        return None
    f = dec.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    return dec if name == "scenario" else None


def _what(doc: str | None, sid: str) -> str:
    first = (doc or "").strip().split("\n\n", 1)[0]
    text = " ".join(first.split())
    return text.removeprefix(f"{sid}:").strip()


@functools.cache
def catalog(directory: Path = SCENARIOS) -> tuple[ScenarioInfo, ...]:
    """Every scenario, in file order (files sorted by name); one entry per ID."""
    out: dict[str, ScenarioInfo] = {}
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            for dec in fn.decorator_list:
                call = _marker(dec)
                if call is None:
                    continue
                sid, level = (_literal(a) for a in call.args[:2])
                kw = {k.arg: _literal(k.value) for k in call.keywords}
                where = kw.get("where") or "any"
                if not isinstance(sid, str) or level not in ("MUST", "SHOULD"):
                    raise ValueError(f"{path.name}:{fn.lineno}: scenario marker without "
                                     "literal ID and MUST/SHOULD")
                if sid in out:
                    raise ValueError(f"{path.name}:{fn.lineno}: scenario {sid} twice")
                certify = kw.get("certify")
                out[sid] = ScenarioInfo(sid, str(level),
                                        certify if isinstance(certify, int) else None,
                                        bool(kw.get("advisory")),
                                        str(where), kw.get("claim") or None,  # type: ignore[arg-type]
                                        _what(ast.get_docstring(fn), sid), path.name, fn.name)
    return tuple(out.values())


def by_level(number: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required ids, advisory ids) of certification level NUMBER."""
    items = [s for s in catalog() if s.certify == number]
    return (tuple(s.id for s in items if not s.advisory),
            tuple(s.id for s in items if s.advisory))


def kernel_only() -> tuple[str, ...]:
    """Scenarios that describe the kernel (hostile servers, protocol compatibility): no level."""
    return tuple(s.id for s in catalog() if s.certify is None)


def markdown_table() -> str:
    """README's scenario table."""
    rows = ["| ID | level | cert. | runs | what |", "|---|---|---|---|---|"]
    for s in catalog():
        cert = "kernel" if s.certify is None else f"{s.certify}" + (" (advisory)"
                                                                    if s.advisory else "")
        what = s.what.replace("|", "\\|")
        rows.append(f"| {s.id} | {s.level} | {cert} | {s.where} | {what} |")
    return "\n".join(rows)

"""No import runs upward: the package's modules sit in layers, and a module imports only from
its own layer or below (read from the source, TYPE_CHECKING imports included). A new
top-level module has to be given a layer here, which is the point."""

import ast
from collections import defaultdict
from pathlib import Path

import nfsconf

ROOT = Path(nfsconf.__file__).parent
# lowest first; the names are nfsconf's top-level modules and packages
LAYERS = [
    {"errors", "plan", "series", "mounttable", "process", "verdict", "shard", "claims", "kmsg",
     "watchdog", "handles", "nfs", "lease"},
    {"fuse"},  # the reference server: standard library and the layer above only
    {"exporters", "servers", "environment", "pynfs"},
    {"transports"},
    {"evidence", "fuzz", "catalog"},
    {"lab", "requires"},
    {"scenario"},
    {"report"},  # pure over results.jsonl: never starts a run
    {"run"},
    {"plugin"},
    {"vm"},  # the lane runs the same service in the guest
    {"service", "bench", "chaos", "doctor"},
    {"cli"},
]
LAYER = {name: n for n, names in enumerate(LAYERS) for name in names}


def _imports() -> dict[str, set[str]]:
    """Top-level module -> the top-level modules it imports."""
    out: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel == ("__init__",):
            continue
        package = ["nfsconf", *rel[:-1]]  # what a relative import is relative to
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                if module == "nfsconf":  # from nfsconf import process
                    targets = [f"nfsconf.{a.name}" for a in node.names]
                else:
                    targets = [module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                parts = t.split(".")
                if parts[0] == "nfsconf" and len(parts) > 1 and parts[1] != rel[0]:
                    out[rel[0]].add(parts[1])
    return out


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert tops - set(LAYER) == set(), "give the new module a layer in LAYERS"


def test_no_import_runs_upward():
    graph = _imports()
    assert graph["vm"] and graph["cli"], "the parser sees no imports: the test would be vacuous"
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                    if b in LAYER and LAYER[b] > LAYER[a])
    assert upward == []

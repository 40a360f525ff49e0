"""The reference server's modules import one another without a cycle: each holds one idea."""

import ast
from pathlib import Path

import nfsconf.fuse

PKG = Path(nfsconf.fuse.__file__).parent


def _graph() -> dict[str, set[str]]:
    mods = {p.stem for p in PKG.glob("*.py")}
    graph = {}
    for p in PKG.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):  # TYPE_CHECKING imports count too
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else \
                    {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "nfsconf.fuse"):
                parts = node.module.split(".")  # type: ignore[union-attr]
                deps |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
        graph[p.stem] = (deps & mods) - {p.stem}
    return graph


def test_no_import_cycle_in_the_reference_server() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(mod: str, path: list[str]) -> None:
        assert mod not in path, f"import cycle: {' -> '.join([*path[path.index(mod):], mod])}"
        if mod in done:
            return
        for dep in sorted(graph[mod]):
            visit(dep, [*path, mod])
        done.add(mod)

    for mod in sorted(graph):
        visit(mod, [])
    # the parser does see imports: an empty graph would pass vacuously
    assert "server" in graph["__main__"] and "ops" in graph["handle_ops"]

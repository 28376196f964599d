"""The package's import graph has no cycle: every import statement of ntkngd/**/*.py (module and
function level, relative and absolute, under TYPE_CHECKING too), read with ast. Importing
`a.b.c` runs the package `a.b` first, so an import also reaches the packages above its target
(but not the importer's own, already running)."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ntkngd")


def _modules() -> dict:
    """Dotted module name -> source path for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3]
                parts = rel.split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = \
                    os.path.join(folder, f)
    return out


def _targets(name: str, path: str, modules: dict) -> set:
    """The package modules an import statement of `name` reaches."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    reached = set()
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    for t in found:
        parts = t.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in modules and mod not in own:
                reached.add(mod)
    return reached


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _targets(name, path, modules) for name, path in modules.items()}
    assert "ntkngd.dynamics.linear" in graph["ntkngd.methods.block"]          # read correctly
    assert "ntkngd.methods" in graph["ntkngd.dynamics.loss_flow"]
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_reader_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]

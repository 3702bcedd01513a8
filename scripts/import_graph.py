"""The first-party import graph, checked: no import from a lower layer to a higher one, and no
circle between modules. Stdlib only (ast); run it from anywhere:

    python scripts/import_graph.py [--root DIR] [--edges]

Layers, lowest first (docs/architecture.md draws them). A package may import its own modules
and any package on a LOWER layer, never one on its own layer or a higher one:

    0  pipeline                 the ML: knows no web, queue or database
    1  jobs, balancer           the job core (settings, database, storage, state machine,
                                queue) | the public Python package (pipeline only)
    2  app, worker, migrations  HTTP | the Celery task | the database's schema history
    3  cli                      the `balancer` command: starts all of the above
    4  bench                    measures everything below

Every import counts, also one inside a function (a lazy import is still a dependency) and
one under `if TYPE_CHECKING:` (two modules that name each other's types are one module in
two files, or need a third). tests/ and scripts/ are not checked: tests may import any
layer. Exit status 1 if anything is wrong, with one line per problem.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

LAYERS: dict[str, int] = {
    "pipeline": 0,
    "jobs": 1,
    "balancer": 1,
    "app": 2,
    "worker": 2,
    "migrations": 2,
    "cli": 3,
    "bench": 4,
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (a package's __init__ as the package's name)
    line: int
    runtime: bool  # False: under `if TYPE_CHECKING:`


def module_files(root: Path, packages: dict[str, int]) -> dict[str, Path]:
    """Dotted name -> file of every module of the given top-level packages under root."""
    found = {}
    for top in packages:
        base = root / top
        if base.is_dir():
            for path in sorted(base.rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
        elif (root / f"{top}.py").is_file():
            found[top] = root / f"{top}.py"
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    """The first-party modules `name` imports, resolved to modules that exist in `known`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:  # `from a.b import c` where c is a name in a.b
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its own package upwards
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            module = resolve(target)
            if module is not None and module != name:
                edges.append(Edge(name, module, node.lineno, runtime))
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(tree, True)
    return edges


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def upward_imports(edges: list[Edge], layers: dict[str, int]) -> list[str]:
    """An import into another top-level package on the same or a higher layer (once per pair
    of modules, at its first line)."""
    problems, seen = [], set()
    for e in sorted(edges, key=lambda e: (e.source, e.line)):
        src, dst = e.source.split(".")[0], e.target.split(".")[0]
        if src != dst and layers[dst] >= layers[src] and (e.source, e.target) not in seen:
            seen.add((e.source, e.target))
            problems.append(
                f"upward import: {e.source} (layer {layers[src]}, line {e.line}) imports "
                f"{e.target} (layer {layers[dst]})"
            )
    return problems


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:  # recursive: the graph is a few hundred modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def check(root: Path, layers: dict[str, int] = LAYERS) -> tuple[list[Edge], list[str]]:
    """(every first-party import, every problem found) for the tree under root."""
    known = module_files(root, layers)
    edges = [e for name, path in known.items() for e in imports_of(name, path, known)]
    problems = upward_imports(edges, layers)
    problems += [f"circle: {' <-> '.join(group)}" for group in cycles(edges)]
    return edges, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--edges", action="store_true", help="list every module-level import")
    args = parser.parse_args(argv)
    edges, problems = check(args.root)
    between: dict[tuple[str, str], int] = defaultdict(int)
    for e in edges:
        src, dst = e.source.split(".")[0], e.target.split(".")[0]
        if src != dst:
            between[src, dst] += 1
    modules = {e.source for e in edges} | {e.target for e in edges}
    print(f"{len(modules)} modules, {len(edges)} first-party imports; between packages:")
    for (src, dst), n in sorted(between.items(), key=lambda kv: (-LAYERS[kv[0][0]], kv[0])):
        print(f"  {src:>10} (layer {LAYERS[src]}) -> {dst:<10} (layer {LAYERS[dst]})  {n:3d}")
    if args.edges:
        for e in sorted(edges, key=lambda e: (e.source, e.target)):
            print(f"  {e.source} -> {e.target}" + ("" if e.runtime else "  (TYPE_CHECKING)"))
    for problem in problems:
        print(problem)
    print("OK: no upward import, no circle" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

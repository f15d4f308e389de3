#!/usr/bin/env python3
"""Structure checks the linter does not make: function length and import cycles in ``perception/``.

* **Function length**: lines from ``def`` to the last line of the body (decorators and docstring
  included), for every function and method; the limit is ``--max-lines`` (80).
* **Import cycles**: a graph with one node per module of the package and an edge for every import of
  another module of the package, wherever it stands (top level or inside a function, ``TYPE_CHECKING``
  blocks left out: they never run). ``from pkg import name`` is an edge to ``pkg.name`` when that is a
  module, else to ``pkg``. A package's ``__init__`` is the node ``pkg``; importing ``pkg.mod`` is an edge
  to ``pkg.mod`` only (Python runs ``pkg/__init__`` first, but that is the package's business, not an
  import the module chose). Cycles are the strongly connected components with more than one module, or
  a module importing itself.

Cyclomatic complexity is ruff's rule C901 (``[tool.ruff.lint.mccabe]`` in ``pyproject.toml``); this
tool prints the largest value too, asking ruff for it.

Usage: ``python tools/check_structure.py [--max-lines 80] [--json]``; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "perception"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, here: str, is_pkg: bool, modules: set[str]) -> set[str]:
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here if is_pkg else here.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != here} | ({here} & found)


def import_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {
        module_name(p): _imports(ast.parse(p.read_text()), module_name(p), p.name == "__init__.py", modules)
        for p in paths
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def complexities() -> dict[str, int]:
    """ruff's McCabe complexity (rule C901) of every function, by ``path:line``."""
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", PACKAGE, "--select", "C901", "--config",
         "lint.mccabe.max-complexity=0", "--output-format", "json", "--exit-zero"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    found = {}
    for d in json.loads(out):
        m = re.search(r"too complex \((\d+) > 0\)", d["message"])
        if m:
            rel = Path(d["filename"]).resolve().relative_to(ROOT)
            found[f"{rel}:{d['location']['row']}"] = int(m.group(1))
    return found


def functions() -> list[dict]:
    cc = complexities()
    rows = []
    for p in sorted((ROOT / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                where = f"{p.relative_to(ROOT)}:{node.lineno}"
                rows.append({"where": where, "name": node.name, "lines": node.end_lineno - start + 1,
                             "complexity": cc.get(where, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-lines", type=int, default=80)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = functions()
    long = [r for r in rows if r["lines"] > args.max_lines]
    graph = import_graph()
    found = cycles(graph)
    longest = max(rows, key=lambda r: r["lines"])
    most = max(rows, key=lambda r: r["complexity"])
    report = {
        "modules": len(graph), "functions": len(rows), "max_lines": longest, "max_complexity": most,
        "too_long": long, "import_cycles": found,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(graph)} modules, {len(rows)} functions in {PACKAGE}/")
        print(f"longest function: {longest['lines']} lines ({longest['name']}, {longest['where']})")
        print(f"most complex function: {most['complexity']} ({most['name']}, {most['where']})")
        for r in long:
            print(f"too long: {r['where']} {r['name']}: {r['lines']} lines > {args.max_lines}")
        for comp in found:
            print("import cycle: " + " -> ".join(comp))
        print("ok" if not long and not found else "FAILED")
    return 1 if long or found else 0


if __name__ == "__main__":
    sys.exit(main())

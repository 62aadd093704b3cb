"""The package's layout rules, checked on its source: imports point one way, search/ modules stay under
400 lines, no module imports another's private name, and an import of the project's own modules inside
a function carries a comment saying why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"core": "core", "spaces": "spaces", "evaluators": "evaluators",
           "hw_profiles": "hw_profiles", "search": "search"}  # fmt: skip
# Who may import whom (besides itself): the layers of the README's Architecture section.
ALLOWED = {
    "core": set(),
    "spaces": {"core"},
    "evaluators": {"spaces", "core"},
    "hw_profiles": {"spaces", "core"},
    "search": {"evaluators", "hw_profiles", "spaces", "core"},
}


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[tuple[ast.AST, str, list[str], bool]]:
    """(node, module, names, inside a function) for every import of compactnas in ``path``."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(
                id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            )
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compactnas"):
            out.append((node, node.module, [a.name for a in node.names], id(node) in inside))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("compactnas"):
                    out.append((node, a.name, [], id(node) in inside))
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else None


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_imports_point_one_way(folder):
    wrong = []
    for path in _modules(folder):
        for node, module, _, _ in _imports(path):
            layer = _layer(module)
            if module == "compactnas" or (layer is None and module.startswith("compactnas.")):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports the face ({module})")
            elif layer is not None and layer != folder and layer not in ALLOWED[folder]:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_search_modules_stay_short():
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _modules("search")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not long, "\n".join(long)


def test_no_private_name_crosses_modules():
    wrong = []
    for folder in (*FOLDERS, "compactnas"):
        for path in _modules(folder):
            for node, module, names, _ in _imports(path):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}: {private}")
    assert not wrong, "\n".join(wrong)


PACKAGE_FOLDERS = ("compactnas", *FOLDERS)  # the folders of pyproject.toml's package-dir
LAZY = re.compile(r"#\s*lazy:\s*\S")


def _function_level_imports_of_ours(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports of compactnas (absolute or relative) nested inside a function, in source order."""
    found: dict[int, ast.Import | ast.ImportFrom] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                ours = node.level > 0 or (node.module or "").split(".")[0] == "compactnas"
            elif isinstance(node, ast.Import):
                ours = any(a.name.split(".")[0] == "compactnas" for a in node.names)
            else:
                continue
            if ours:
                found[id(node)] = node
    return sorted(found.values(), key=lambda n: (n.lineno, n.col_offset))


def test_function_level_imports_of_our_modules_say_why():
    """An import of our own code inside a function defers it on purpose, and says so: ``# lazy: why``
    on its line or the line above (an optional extra, a light entry point, a cycle left in place)."""
    bare = []
    for folder in PACKAGE_FOLDERS:
        for path in _modules(folder):
            lines = path.read_text().splitlines()
            for node in _function_level_imports_of_ours(ast.parse("\n".join(lines))):
                here = lines[node.lineno - 1]
                above = lines[node.lineno - 2] if node.lineno > 1 else ""
                if not (LAZY.search(here) or LAZY.match(above.strip())):
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno} {here.strip()}")
    assert not bare, "imports of our modules inside functions without '# lazy: why':\n" + "\n".join(
        bare
    )


def _module_name(folder: str, path: Path) -> str:
    parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
    return ".".join(["compactnas", folder, *parts])


def test_module_level_imports_have_no_cycle():
    """Cycles between our modules at import time: each one works only in one import order."""
    files = {_module_name(f, p): p for f in FOLDERS for p in _modules(f)}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for _, module, names, inside in _imports(path):
            if inside:
                continue
            # ``from pkg import mod`` imports the submodule ``pkg.mod``
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in files]
            graph[name].update(subs or [module])
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep not in graph or dep == node:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ importing its own submodules (registrations) is not a cycle of concern.
    cycles = [
        c
        for c in cycles
        if not all(p.startswith(c.split(" -> ")[0] + ".") for p in c.split(" -> ")[1:-1])
    ]
    assert not cycles, "\n".join(cycles)

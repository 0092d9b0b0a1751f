"""The package's shape: no import cycles, imports at module top, and a README layout that lists
every module (read from the source, so these run without importing anything heavy)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vqspeech"

LAZY_IMPORTS = {
    # module -> imports it may make inside functions, each for a stated reason
    "vqspeech.cli": None,  # every verb imports its library when it runs: `vqspeech --help` stays instant
    "vqspeech.eval.speaker_similarity": {"resemblyzer"},  # optional extra; librosa/numba take seconds
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: str, path: Path, known: dict[str, Path]) -> tuple[set[str], list[tuple[int, str]]]:
    """(vqspeech modules imported at module level, (line, name) of imports inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    top, nested = set(), []

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        assert isinstance(node, ast.ImportFrom)
        source = resolve(module, node, is_package)
        names = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known]
        return [source, *names]

    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top.update(t for t in targets(node) if t in known)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    nested += [(inner.lineno, name) for name in targets(inner)]
    return top, nested


def test_no_import_cycles_between_modules():
    known = modules()
    graph = {name: imports(name, path, known)[0] - {name} for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycles.append(" -> ".join([*path[path.index(other):], other]))
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_are_at_module_top():
    known = modules()
    found = []
    for name, path in known.items():
        allowed = LAZY_IMPORTS.get(name, set())
        for line, imported in imports(name, path, known)[1]:
            if allowed is not None and imported.split(".")[0] not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported} inside a function")
    assert not found, "\n".join(found)


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    block = block.split("vqspeech/\n", 1)[1]
    block = block[: re.search(r"^\S", block, re.MULTILINE).start()]  # up to the next top-level folder
    named = set(re.findall(r"[\w.]+\.(?:py|c|tsv|css|js)\b|[\w]+/", block))
    files = {p.name for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".py", ".c", ".tsv", ".css", ".js")
             and p.name != "__init__.py" and "__pycache__" not in p.parts}
    folders = {p.name + "/" for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert files - named == set(), f"modules missing from the README layout: {sorted(files - named)}"
    assert folders - named == set(), f"folders missing from the README layout: {sorted(folders - named)}"
    stale = {n for n in named if n.endswith(".py") and n not in files | {"__init__.py"}}
    assert not stale, f"the README layout names modules that do not exist: {sorted(stale)}"

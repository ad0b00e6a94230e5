"""The layer order of ``src/posttrain``: imports point down (or sideways within a package), never up, and no two
modules import each other, directly or through others.

Every ``posttrain`` import of a module counts, at module level or inside a function (only heavy libraries such as
torch, transformers, peft and trl are imported inside functions to keep start-up light; a posttrain import there
still makes the module depend on the imported one). A module's layer is that of its top-level module or its first
package (``posttrain.training.fast_paths.base`` is in ``training``).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "posttrain"

#: bottom to top; a module may import its own layer or the ones below it
LAYERS = (
    ("__init__", "errors", "storage", "assets", "precision", "log", "stats", "tracking"),
    ("checks",),
    ("tasks", "chat_templates"),
    ("data", "manifest"),
    ("configs",),
    ("models",),
    ("rl",),
    ("training", "evaluation", "planning"),
    ("export",),
    ("pipeline",),
    ("stages",),
    ("cli", "reference", "launcher"),
)
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in LAYER, f"{module}: its top-level name '{top}' has no layer in tests/test_architecture.py LAYERS"
    return LAYER[top]


def imported_modules(module: str) -> set[str]:
    """The posttrain modules ``module`` imports anywhere in its file (``from pkg import submodule`` names the
    submodule)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES and "." in name:  # `import posttrain.a.b.name` -> its module
                name = name.rpartition(".")[0]
            if name in MODULES and name != module:
                found.add(name)
    return found


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    order = " < ".join("/".join(names) for names in LAYERS)
    assert not upward, f"imports pointing up the layer order ({order}):\n  " + "\n  ".join(upward)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    cycles = strongly_connected(GRAPH)
    lines = [
        ", ".join(f"{a} -> {b}" for a in component for b in sorted(GRAPH[a]) if b in component) for component in cycles
    ]
    assert not cycles, "modules importing each other (edges within each cycle):\n  " + "\n  ".join(lines)


def test_imports_inside_functions_count():
    # posttrain.stages imports posttrain.configs inside run_stage only
    assert "posttrain.configs" in GRAPH["posttrain.stages"]


def test_tests_mirror_the_package():
    """Each folder of tests/ is a package of src/posttrain (or e2e/, reliability/, assets/), and each top-level test
    file tests a top-level module (or this file, the layout itself)."""
    tests = Path(__file__).resolve().parent
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in ROOT.glob("*.py")}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - packages <= {"e2e", "reliability", "assets"}, sorted(folders - packages)
    tops = {p.stem.removeprefix("test_") for p in tests.glob("test_*.py")} - {"architecture"}
    strays = [t for t in tops if not any(t == m or t.startswith(f"{m}_") for m in modules)]
    assert not strays, strays

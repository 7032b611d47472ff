"""The package's shape: sub-packages in pipeline order, each importing only from those below it,
no import cycles, and the prediction path free of PyTorch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import braintumor

PACKAGE = Path(braintumor.__file__).parent

# Bottom to top: a module may import from its own layer and the layers below, never above.
LAYERS = [
    {"errors", "options", "files"},
    {"data", "metrics", "distributed"},
    {"model"},
    {"inference"},
    {"training"},
    {"evaluation", "audit", "serve"},
    {"cli", "fundamentals", "__main__"},  # the lessons apply the theory to the MRI data, evaluated as the model is
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of braintumor it imports}``, from the source (imports inside functions
    included: a lazy import is still a dependency)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("braintumor"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("braintumor")}
        graph[name] = {m for m in found if m != name}
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_subpackage_has_a_layer():
    tops = {_top(m) for m in import_graph()} - {"__init__"}
    assert tops <= set(LEVEL), tops - set(LEVEL)


def test_nothing_imports_upward():
    upward = [(m, i) for m, imports in import_graph().items() for i in imports
              if _top(m) in LEVEL and _top(i) in LEVEL and LEVEL[_top(i)] > LEVEL[_top(m)]]
    assert not upward, upward


def test_no_import_cycles_between_subpackages():
    edges = {}
    for m, imports in import_graph().items():
        edges.setdefault(_top(m), set()).update(_top(i) for i in imports if _top(i) != _top(m) and _top(i) != "__init__")
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in edges.get(node, ()):
            assert state.get(nxt) != "open", f"cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])


def test_the_prediction_api_and_the_cli_parser_import_no_torch():
    code = ("import sys; from braintumor.inference import Predictor; from braintumor.cli import build_parser; "
            "build_parser(); print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

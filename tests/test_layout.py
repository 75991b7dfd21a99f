"""The package's layers (ARCHITECTURE.md): higher ones import lower ones, never the reverse, and
no two modules import each other, even inside functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastgan_tf"
# From the bottom up; a module may import its own layer and the layers below it.
LAYERS = [
    {"errors", "paths", "io", "progress", "console", "imageops", "oscompat", "cpu"},
    {"downloads", "augment", "schedule", "config", "checkpoint_keys", "runlock", "visualize",
     "models", "optimizers"},
    {"checkpoints", "losses", "lpips", "metrics", "data"},
    {"training"},
    {"runs", "generation", "export", "evaluation", "doctor"},
    {"cli", "__main__"},
]


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from package import module` depends on the module
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
    return {n for n in names if n in known and n.startswith("fastgan_tf")}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    if top == "__init__":
        return 0
    return next(i for i, names in enumerate(LAYERS) if top in names)


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name, "fastgan_tf"}
            for name, path in found.items()}


def test_every_module_has_a_layer():
    assert [m for m in graph() if m != "fastgan_tf" and not any(
        m.split(".")[1] in names for names in LAYERS)] == []


def test_no_module_imports_a_higher_layer():
    upward = sorted((module, imported) for module, targets in graph().items()
                    for imported in targets if layer(imported) > layer(module))
    assert upward == []


def test_no_import_cycles():
    edges = graph()
    cycles = []

    def visit(node, path):
        for nxt in edges.get(node, ()):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif len(path) < 12:
                visit(nxt, path + [nxt])

    for start in edges:
        visit(start, [start])
    assert cycles == []

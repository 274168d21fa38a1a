"""The import contract of docs/architecture.md, checked on the source of every module with `ast`.

Arrows point down only: a package imports only the packages `MAY_IMPORT` lists for it (imports inside
functions count too); the library never imports `pipeline.cli` or the app; the app never imports the
command line; and only `networks` and `training` import TensorFlow or JAX when the module is imported, so the
label commands, serving and the dashboard start without either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("core", "data", "networks", "inference", "evaluation", "explain", "training", "plots")

# What each package of the library may import, besides itself; read from the bottom up.
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "networks": {"core", "data"},
    "inference": {"core", "data", "networks"},
    "evaluation": {"core", "data", "networks", "inference"},
    "explain": {"core", "data", "networks", "inference", "evaluation"},
    "training": {"core", "data", "networks", "inference", "evaluation"},
    "plots": {"core", "evaluation"},  # the evaluation's result types only: see PLOTS_MAY_USE
    "cli": set(LIBRARY),
    "": {"core", "cli"},  # pipeline/__init__.py (the package's two names) and pipeline/__main__.py
}
PLOTS_MAY_USE = {"pipeline.evaluation.results"}
HEAVY = {"tensorflow", "jax", "tf_keras"}
HEAVY_ALLOWED = {"networks", "training"}


def imports(tree: ast.Module, module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at import time)`` for every import of a module's syntax tree.

    An import inside a function, or under ``if TYPE_CHECKING:``, does not run when the module is imported.
    """
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, at_import) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            # `from pipeline.data import imaging` imports pipeline.data.imaging
            found.extend((f"{base}.{alias.name}" if base else alias.name, node.lineno, at_import)
                         for alias in node.names)
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node.test) and child is not node.test:
                visit(child, False)
            else:
                visit(child, at_import and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _package(module: str) -> str | None:
    """The package of the library a dotted name belongs to ("" for pipeline itself), None outside it."""
    parts = module.split(".")
    if parts[0] != "pipeline":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in (*LIBRARY, "cli") else ""


def violations(path: Path, source: str) -> list[str]:
    """Every way one file breaks the contract, one line each (``path:line: what``)."""
    relative = path.relative_to(ROOT)
    module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
    in_app = relative.parts[0] == "app"
    own = None if in_app else _package(module)
    problems = []
    for name, line, at_import in imports(ast.parse(source), module):
        where = f"{relative}:{line}"
        top = name.split(".")[0]
        target = _package(name)
        if in_app:
            if target == "cli":
                problems.append(f"{where}: the app imports the command line ({name}); call the library instead")
            continue
        if _is_app_module(top):
            problems.append(f"{where}: the library imports the app ({name})")
        if target is not None and target != own and target not in MAY_IMPORT[own]:
            problems.append(f"{where}: {own or 'pipeline'} may not import {target} ({name}); arrows point down only")
        if own == "plots" and target == "evaluation" and not any(name.startswith(m) for m in PLOTS_MAY_USE):
            problems.append(f"{where}: plots uses the evaluation's result types only, not {name}")
        if at_import and top in HEAVY and own not in HEAVY_ALLOWED:
            problems.append(f"{where}: {top} imported at module level outside {sorted(HEAVY_ALLOWED)}; "
                            "import it inside the function that needs it")
    return problems


def _is_app_module(top: str) -> bool:
    """Whether a top-level name is the app: ``app``, or one of its modules (Streamlit puts app/ on the path)."""
    return top == "app" or (ROOT / "app" / f"{top}.py").exists() or (ROOT / "app" / top).is_dir()


def _sources() -> list[Path]:
    return sorted(p for folder in ("pipeline", "app") for p in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_every_module_keeps_the_import_contract():
    problems = [problem for path in _sources() for problem in violations(path, path.read_text())]
    assert not problems, "\n".join(problems)


def test_every_library_package_has_its_rules():
    packages = {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").exists()}
    assert packages == {*LIBRARY, "cli"}, "a new package needs its line in MAY_IMPORT (and docs/architecture.md)"


def test_the_allowed_arrows_have_no_cycle():
    seen: set[str] = set()

    def below(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, f"cycle: {' -> '.join((*path, package))}"
        for lower in MAY_IMPORT[package]:
            below(lower, (*path, package))
        seen.add(package)

    for package in MAY_IMPORT:
        below(package, ())


@pytest.mark.parametrize(
    ("path", "source", "words"),
    [
        ("pipeline/data/x.py", "from pipeline.training import loop\n", "data may not import training"),
        ("pipeline/core/x.py", "def f():\n    from pipeline.data import imaging\n", "core may not import data"),
        ("pipeline/evaluation/x.py", "import pipeline.cli\n", "evaluation may not import cli"),
        ("pipeline/plots/x.py", "from pipeline.evaluation import metrics\n", "result types only"),
        ("pipeline/inference/x.py", "import tensorflow as tf\n", "tensorflow imported at module level"),
        ("pipeline/data/x.py", "try:\n    import jax\nexcept ImportError:\n    pass\n", "jax imported at module"),
        ("pipeline/explain/x.py", "import shared\n", "the library imports the app"),
        ("app/views/x.py", "from pipeline.cli import build_parser\n", "the app imports the command line"),
    ],
)
def test_the_contract_catches(path, source, words):
    assert any(words in problem for problem in violations(ROOT / path, source)), violations(ROOT / path, source)


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("pipeline/inference/x.py", "def f():\n    import tensorflow as tf\n"),
        ("pipeline/data/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tensorflow\n"),
        ("pipeline/training/x.py", "import tensorflow as tf\nfrom pipeline.evaluation import metrics\n"),
        ("pipeline/plots/x.py", "from pipeline.evaluation.results import Summary\n"),
        ("app/views/x.py", "import shared\nfrom pipeline.training import runs\n"),
    ],
)
def test_the_contract_allows(path, source):
    assert violations(ROOT / path, source) == []

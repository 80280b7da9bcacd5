"""The code-quality bar of issue 12 on src/landslide_hazard, read with ``ast``:

- no module over MAX_MODULE_LINES lines (as ``wc -l`` counts them);
- no function or method over MAX_FUNCTION_LINES lines (from its ``def`` line to its last line;
  decorators not counted);
- no module imports a private (``_name``) name of another subpackage of landslide_hazard
  (``from ..predict.core import _x`` in ``training/`` is refused; ``from .core import _x``
  inside ``predict/`` is not).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "landslide_hazard"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _subpackage(module: str) -> str:
    """``predict`` for ``landslide_hazard.predict.core``; the module name for a top-level one."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_module(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``ImportFrom`` reads (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def long_functions(source: str, limit: int) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function in ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def private_imports(source: str, path: Path) -> list[str]:
    """``module._name`` for each private name ``path`` imports from another subpackage."""
    own = _subpackage(_module_name(path))
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = _imported_module(node, path)
            if not module.startswith("landslide_hazard"):
                continue
            if _subpackage(module) == own:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{module}.{alias.name}")
    return found


def test_the_checks_see_what_they_should(tmp_path):
    """The checkers themselves, on made-up sources (so a broken checker cannot pass silently)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(100))
    assert long_functions(f"def f():\n{body}\n", 100) == [("f", 1, 101)]
    assert long_functions(f"def f():\n{body}\n", 101) == []
    nested = f"class A:\n    def m(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"
    assert [name for name, _, _ in long_functions(nested, 100)] == ["m"]
    training = PACKAGE / "training" / "loop.py"
    assert private_imports("from ..predict.core import _x, y\n", training) == [
        "landslide_hazard.predict.core._x"
    ]
    assert private_imports("from .fit import _x\n", training) == []
    assert private_imports("from landslide_hazard.run import _y\n", training) == [
        "landslide_hazard.run._y"
    ]
    assert private_imports("from . import __version__\n", PACKAGE / "run.py") == []


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_module_shape(path: Path):
    source = path.read_text()
    n_lines = source.count("\n")  # as wc -l counts
    assert n_lines <= MAX_MODULE_LINES, f"{_rel(path)}: {n_lines} lines (max {MAX_MODULE_LINES})"
    long = long_functions(source, MAX_FUNCTION_LINES)
    assert not long, f"{_rel(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"
    private = private_imports(source, path)
    assert not private, f"{_rel(path)}: imports another package's private names: {private}"

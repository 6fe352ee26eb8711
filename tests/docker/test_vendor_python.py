"""The code that runs inside Vast's TensorFlow image runs on its Python.

vast-ai/base-image makes /venv/main with Python 3.10 by default (Dockerfile:331 PYTHON_VERSION=3.10,
:355 `conda create -p /venv/main python="${PYTHON_VERSION}"`); the local stand-in
(docker/vast-tf-standin.Dockerfile) can only have Debian's 3.11. So every file the host runs with
that interpreter (trainer/, the overlay's and the thin image's helper scripts) is checked here to
parse as Python 3.10 and to import no module that 3.10 lacks without a fall-back; the on-instance
watchdog, which runs on any Python >= 3.8, is checked in tests/deploy/test_vast_watchdog.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST_FILES = sorted((REPO / "trainer").rglob("*.py")) + [
    REPO / "docker" / "base_constraints.py", REPO / "docker" / "requirements_from_pyproject.py"] + sorted(
    (REPO / "deploy" / "host" / "shipped").glob("*.py"))  # what deploy/ copies to the host and runs there
NEW_IN_311 = {"tomllib", "wsgiref.types"}


def _guarded(tree: ast.AST) -> set[int]:
    """Import nodes inside a `try:` whose handler catches ImportError / ModuleNotFoundError (a fall-back)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_parses_as_python_3_10_without_311_only_modules(path):
    tree = ast.parse(path.read_text(), feature_version=(3, 10))
    guarded = _guarded(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not [n for n in names if n in NEW_IN_311], (path, names)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in {("typing", "Self"), ("datetime", "UTC"), ("enum", "StrEnum"),
                                                      ("asyncio", "TaskGroup"), ("hashlib", "file_digest")}, (
                path, node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module in ("typing", "datetime", "enum") and id(node) not in guarded:
            assert not {a.name for a in node.names} & {"Self", "UTC", "StrEnum", "LiteralString", "Never"}, (
                path, node.lineno)

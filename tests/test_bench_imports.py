"""Every bench/ script still imports: each name it takes from this repository exists there.

Benches run by hand, rarely, and no other test imports them, so a helper renamed or moved in
trainer/, deploy/ or another bench script broke them silently (bench/backbones.py and
bench/plan_inputs.py still imported make_videos from frame_sampling after it was rewritten).
Importing them for real would load TensorFlow per script; reading their import statements
with `ast` and checking the names against the modules' top-level definitions is instant.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def module_file(dotted: str, script_dir: Path) -> Path | None:
    """The file of a module of this repository, as a bench script imports it (None: not ours).

    A bench script runs as `python bench/X.py`, so its own folder is on sys.path (bare names
    are sibling scripts) and each inserts the repository root (dotted names from the root)."""
    parts = dotted.split(".")
    for base in (script_dir, ROOT):
        stem = base.joinpath(*parts)
        if stem.with_suffix(".py").is_file():
            return stem.with_suffix(".py")
        if (stem / "__init__.py").is_file():
            return stem / "__init__.py"
    return None


def top_level_names(path: Path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports),
    including inside top-level if/try blocks, and for a package its sub-modules."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name):
                            names.add(n.id)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    if path.name == "__init__.py":
        names.update(p.stem for p in path.parent.glob("*.py") if p.stem != "__init__")
        names.update(p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file())
    return names


def missing_names(script: Path) -> list[str]:
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            target = module_file(node.module, script.parent)
            if target is None:
                continue  # a third-party module
            defined = top_level_names(target)
            missing += [f"{node.module}.{a.name} (line {node.lineno})" for a in node.names
                        if a.name != "*" and a.name not in defined]
        elif isinstance(node, ast.Import):
            for a in node.names:
                head = a.name.split(".")[0]
                if module_file(head, script.parent) is not None and module_file(a.name, script.parent) is None:
                    missing.append(f"{a.name} (line {node.lineno})")
    return missing


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_every_name_a_bench_script_imports_from_the_repository_exists(script):
    assert not missing_names(script), f"{script.name} imports what is not there: {missing_names(script)}"


def test_the_check_sees_a_name_that_is_gone(tmp_path):
    (tmp_path / "helper.py").write_text("def kept():\n    pass\n")
    script = tmp_path / "script.py"
    script.write_text("from helper import kept, gone\nfrom trainer.frames import sample_frames, nothing_such\n")
    assert missing_names(script) == ["helper.gone (line 1)", "trainer.frames.nothing_such (line 2)"]

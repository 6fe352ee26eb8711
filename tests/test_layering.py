"""The code's layout rules, checked from the source alone (ast; nothing is imported but the CLIs).

1. No import cycle among the modules of trainer/ and deploy/. Every `import` statement counts,
   wherever it is: function-level imports (the lazy TensorFlow ones) and `if TYPE_CHECKING:`
   imports too, since a cycle that only works because one side imports late is still two
   modules that each need the other.
2. trainer/ (runs in the image) and deploy/ (runs on the user's machine) never import each
   other: deploy/ reaches the trainer only as a `python -m trainer` subprocess.
3. No .py file over MAX_LINES lines unless its module docstring gives the reason in a
   sentence starting with REASON_MARKER ("One file because ...").
4. Every option of every verb of `python -m trainer` and `python -m deploy` has a help line,
   every verb has a one-line help, and each tool has a description.

The packages are walked, not listed, so a new or moved module is checked without editing this file.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "deploy")
MAX_LINES = 400
REASON_MARKER = "One file because"



def module_files(packages=PACKAGES, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages (a package is its __init__)."""
    found = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports, from every import statement in its file.

    `from pkg import mod` counts as importing pkg.mod when that is a module, else pkg;
    relative imports are resolved against the module's package.
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in known else base)
    resolved = set()
    for target in targets:
        # `import a.b.c` where only a.b is ours (c a name in it): the longest known prefix
        parts = target.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            resolved.add(".".join(parts))
    resolved.discard(name)
    return resolved


def import_graph(packages=PACKAGES, root: Path = ROOT) -> dict[str, set[str]]:
    known = module_files(packages, root)
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of more than one module.

    Tarjan's algorithm, iterative so that a deep import chain cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _long_files(packages=PACKAGES, root: Path = ROOT) -> dict[str, int]:
    """'pkg/x.py' -> line count, for files over MAX_LINES whose docstring gives no reason."""
    long = {}
    for path in module_files(packages, root).values():
        lines = path.read_text().count("\n")
        if lines > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if REASON_MARKER not in " ".join(doc.split()):
                long[path.relative_to(root).as_posix()] = lines
    return long


def test_the_cycle_finder_finds_a_function_level_cycle_and_resolves_relative_imports(tmp_path):
    """The checker itself: a cycle closed only by a lazy, relative import is found and named."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import os\nfrom pkg import a as _a\n")
    (pkg / "d.py").write_text("from pkg.a import thing\nfrom . import missing\n")
    graph = import_graph(("pkg",), tmp_path)
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a", "pkg"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import os\n")
    assert cycles(import_graph(("pkg",), tmp_path)) == []


def test_no_import_cycle_in_trainer_or_deploy():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_trainer_and_deploy_never_import_each_other():
    graph = import_graph()
    crossing = [f"{a} imports {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
                if a.split(".")[0] != b.split(".")[0]]
    assert not crossing, crossing


def test_no_file_over_the_line_limit_without_a_reason():
    long = _long_files()
    assert not long, (f"over {MAX_LINES} lines with no '{REASON_MARKER} ...' sentence in the module "
                      f"docstring (split it along a seam you can name, or give the reason): {long}")


def test_the_line_limit_accepts_a_reason_in_the_docstring(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "x = 1\n" * (MAX_LINES + 1)
    (tmp_path / "pkg" / "long.py").write_text('"""Long."""\n' + body)
    (tmp_path / "pkg" / "fine.py").write_text(f'"""Long.\n\n{REASON_MARKER} the\nparts share state."""\n' + body)
    assert _long_files(("pkg",), tmp_path) == {"pkg/long.py": MAX_LINES + 2}


def _help_gaps(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    """'prog verb --flag' for every option or positional without help, and every verb without a help line."""
    gaps = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest: a.help for a in action._choices_actions}
            for verb, sub in action.choices.items():
                if not (helped.get(verb) or "").strip():
                    gaps.append(f"{prog} {verb} (the verb itself)")
                gaps += _help_gaps(sub, f"{prog} {verb}")
            continue
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            gaps.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return gaps


@pytest.mark.parametrize("tool", PACKAGES)
def test_every_cli_option_and_verb_has_a_help_line(tool):
    import importlib

    parser = importlib.import_module(f"{tool}.cli").build_parser()
    assert (parser.description or "").strip(), f"python -m {tool} --help has no description"
    gaps = _help_gaps(parser, f"python -m {tool}")
    assert not gaps, "no help line: " + ", ".join(gaps)

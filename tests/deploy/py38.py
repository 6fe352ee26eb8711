"""What in a parsed module needs a Python newer than 3.8 (for files that must run on any Python >= 3.8).

`ast.parse(feature_version=(3, 8))` catches new syntax (match, parenthesised context managers,
except*); it cannot see new *behaviour* of old syntax or new library calls. This walk finds the
ones a careful reader would miss: builtin generics subscripted outside annotations (list[int]
at run time is 3.9+), `X | Y` types outside annotations (3.10+), dict `|` (3.9+) and the string,
path and functools methods added in 3.9-3.12.
"""

from __future__ import annotations

import ast

NEWER_METHODS = {
    "removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
    "readlink": "3.9 (pathlib)", "cache": "3.9 (functools)", "bit_count": "3.10", "randbytes": "3.9",
    "pairwise": "3.10", "batched": "3.12", "walk_up": "3.12", "exception_group": "3.11",
}
NEWER_MODULES = {"zoneinfo": "3.9", "graphlib": "3.9", "tomllib": "3.11"}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _annotation_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            anns = [x.annotation for x in a.args + a.kwonlyargs + a.posonlyargs + [a.vararg, a.kwarg] if x] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            anns = [node.annotation]
        for ann in anns:
            if ann is not None:
                ids.update(id(n) for n in ast.walk(ann))
    return ids


def newer_than_38(tree: ast.AST) -> list[str]:
    """Findings as 'line N: what (Python version)'; empty when the module runs on 3.8."""
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in ast.walk(tree))
    in_ann = _annotation_nodes(tree) if future else set()
    out = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS and not (
                node.attr == "readlink" and isinstance(node.value, ast.Name) and node.value.id == "os"):
            out.append(f"line {line}: .{node.attr} ({NEWER_METHODS[node.attr]})")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"line {line}: import {n} ({NEWER_MODULES[n.split('.')[0]]})" for n in names
                    if n.split(".")[0] in NEWER_MODULES]
        elif id(node) in in_ann:
            continue
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
            out.append(f"line {line}: {node.value.id}[...] at run time (3.9)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and (
                isinstance(node.left, (ast.Dict, ast.DictComp)) or isinstance(node.right, (ast.Dict, ast.DictComp))):
            out.append(f"line {line}: dict | dict (3.9)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and any(
                isinstance(side, ast.Constant) and side.value is None or
                isinstance(side, ast.Name) and side.id in BUILTIN_GENERICS | {"int", "str", "float", "bool", "bytes"}
                for side in (node.left, node.right)):
            out.append(f"line {line}: X | Y type at run time (3.10)")
    if not future:
        out += [f"line {getattr(n, 'lineno', '?')}: annotation uses X | Y without `from __future__ import annotations`"
                for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                and id(n) in _annotation_nodes(tree)]
    return out

"""Print the image's Python requirements, one per line, from the project's pyproject.toml.

Used by docker/Dockerfile, which installs the dependencies in a layer of their own
before the trainer's code exists in the build, so that a code change never reinstalls
TensorFlow. Reading pyproject.toml (rather than a second requirements file) keeps
the image and `pip install .[train]` from drifting apart.

    python3 requirements_from_pyproject.py pyproject.toml [EXTRA...]   (default: train)

TensorFlow itself is not printed: it comes from the Dockerfile's TENSORFLOW build
argument, because the CUDA and CPU builds must never be installed together.
"""

from __future__ import annotations

import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib


def requirements(pyproject_path: str, extras: list[str]) -> list[str]:
    with open(pyproject_path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"error: pyproject.toml has no extra {unknown[0]!r} (has: {', '.join(optional)})")
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += [r for r in optional[extra] if r not in reqs]
    return reqs


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    print("\n".join(requirements(argv[0], argv[1:] or ["train"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The README and docs/ say only what is true of this repository.

Fast and offline: it reads README.md, docs/*.md and the Makefile, and asks the two
command-line parsers for their verbs. What it holds the documentation to:
- the README stays short enough to finish (<= 200 lines);
- every relative link resolves to a file, and every `#anchor` to a heading of that file
  (GitHub's slugs);
- every `make TARGET`, `python -m deploy VERB` and `python -m trainer VERB` in code is real;
- every repository path in code (deploy/, trainer/, docker/, bench/, configs/, tests/,
  docs/, .ci/) exists;
- every figure in docs/benchmarks.md sits in a section naming the `bench/` script that
  produced it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
PATH_ROOTS = ("deploy/", "trainer/", "docker/", "bench/", "configs/", "tests/", "docs/", ".ci/")
PATH_TOKEN = re.compile(r"^(?:deploy|trainer|docker|bench|configs|tests|docs|\.ci)/[A-Za-z0-9_./-]*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def split_text(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, fenced-code lines), each as (line number, text)."""
    prose, code, fenced = [], [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append((n, line))
    return prose, code


def code_snippets(path: Path) -> list[tuple[int, str]]:
    """Everything written as code: inline `spans` of prose lines and fenced-block lines."""
    prose, code = split_text(path.read_text(encoding="utf-8"))
    spans = [(n, m.group(2)) for n, line in prose for m in CODE_SPAN.finditer(line)]
    return spans + code


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](link) -> text
    text = text.replace("`", "").strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_text(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(path: Path) -> list[str]:
    prose, _ = split_text(path.read_text(encoding="utf-8"))
    broken = []
    for n, line in prose:
        for m in LINK.finditer(CODE_SPAN.sub("", line)):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{_rel(path)}:{n}: ({target})"
            if not dest.exists():
                broken.append(f"{where} no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} no heading with anchor #{anchor} in {_rel(dest)}")
    return broken


def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if m and not line.startswith((".", "\t")):
            targets.update(m.group(1).split())
    return targets


def make_targets_named(path: Path) -> list[tuple[int, str]]:
    found = []
    for n, code in code_snippets(path):
        for m in re.finditer(r"(?:^|[\s;&|(`])make\s+((?:-\S+\s+)*)([A-Za-z0-9_.-]+)(?![=\w])", code):
            found.append((n, m.group(2)))
    return found


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    """The verbs of a parser, read from its subparsers action (not from --help text)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, f"{parser.prog} has no subcommands"
    return set().union(*(a.choices for a in actions))


def cli_verbs(tool: str) -> set[str]:
    if tool == "deploy":
        from deploy.cli import build_parser
    else:
        from trainer.cli import build_parser
    return subcommands(build_parser())


def verbs_named(path: Path, tool: str) -> list[tuple[int, str]]:
    """(line, verb) for every `python -m TOOL VERB` written as code; options before the verb are skipped."""
    found = []
    for n, code in code_snippets(path):
        for m in re.finditer(rf"python3?\s+-m\s+{tool}\b((?:\s+\S+)*)", code):
            tokens = m.group(1).split()
            i = 0
            while i < len(tokens):
                tok = tokens[i]
                if tok in ("--config", "[--config"):
                    i += 2
                    continue
                if tok.startswith(("-", "[")):
                    i += 1
                    continue
                if re.fullmatch(r"[a-z][a-z0-9_-]*", tok):
                    found.append((n, tok))
                break  # a placeholder (`…`, `<command>`) names no verb
    return found


def repository_paths_named(path: Path) -> list[tuple[int, str]]:
    found = []
    for n, code in code_snippets(path):
        for tok in re.split(r"[\s,;()\[\]{}'\"=]+", code):
            tok = tok.split("::")[0].rstrip(".:")
            tok = re.sub(r":\d[\d,-]*$", "", tok)  # file:line citations
            if tok.startswith(PATH_ROOTS) and PATH_TOKEN.match(tok) and "..." not in tok:
                found.append((n, tok))
    return found


# --------------------------------------------------------------------------------------------

def test_readme_is_short_enough_to_finish():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_the_docs_pages_the_readme_promises_exist_and_are_linked():
    wanted = ["trainer", "deploy-ssh", "deploy-vast", "images", "security", "benchmarks", "seed-vs-reality",
              "development"]
    readme = README.read_text(encoding="utf-8")
    missing = [p for p in wanted if not (REPO / "docs" / f"{p}.md").is_file()]
    unlinked = [p for p in wanted if f"(docs/{p}.md" not in readme]
    assert not missing and not unlinked, f"missing pages {missing}; pages the README does not link {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    assert not broken_links(page), "\n".join(broken_links(page))


def test_the_timeline_picture_is_still_shown():
    shown = [p for p in PAGES if re.search(r"!\[[^\]]*\]\((?:docs/)?timeline_demo\.png\)", p.read_text())]
    assert shown and not any(broken_links(p) for p in shown)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_make_target_named_exists(page):
    targets = makefile_targets()
    assert {"test", "test-fast", "check", "deploy", "logs", "fetch", "destroy"} <= targets  # the parse works
    wrong = [f"{_rel(page)}:{n}: make {t}" for n, t in make_targets_named(page) if t not in targets]
    assert not wrong, "no such Makefile target:\n" + "\n".join(wrong)


@pytest.mark.parametrize("tool", ["deploy", "trainer"])
def test_every_cli_verb_named_exists(tool):
    verbs = cli_verbs(tool)
    named = [(page, n, v) for page in PAGES for n, v in verbs_named(page, tool)]
    assert named, f"the docs name no python -m {tool} verb at all: the parse is broken"
    wrong = [f"{_rel(p)}:{n}: python -m {tool} {v}" for p, n, v in named if v not in verbs]
    assert not wrong, f"not a verb of python -m {tool} ({', '.join(sorted(verbs))}):\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_repository_path_named_exists(page):
    missing = sorted({f"{t}" for _, t in repository_paths_named(page) if not (REPO / t).exists()})
    assert not missing, f"{_rel(page)} names paths that do not exist:\n" + "\n".join(missing)


def test_every_benchmark_figure_names_the_bench_command_that_made_it():
    page = REPO / "docs" / "benchmarks.md"
    prose, code = split_text(page.read_text(encoding="utf-8"))
    sections: list[tuple[str, list[tuple[int, str]]]] = [("(top of the page)", [])]
    for n, line in sorted(prose + code):
        if re.match(r"^#{1,6}\s", line) and (n, line) in prose:
            sections.append((line, []))
        else:
            sections[-1][1].append((n, line))
    problems, figures = [], 0
    for heading, lines in sections:
        text = "\n".join(line for _, line in lines)
        scripts = re.findall(r"`[^`]*?\b(bench/[A-Za-z0-9_]+\.py)\b[^`]*`", text)
        problems += [f"{heading}: {s} does not exist" for s in scripts if not (REPO / s).is_file()]
        existing = [s for s in scripts if (REPO / s).is_file()]
        for n, line in lines:
            if re.search(r"\d", re.sub(r"bench/\S+\.py", "", line)):
                figures += 1
                if not existing:
                    problems.append(f"docs/benchmarks.md:{n}: a figure in a section naming no bench/ script: {line}")
    assert figures > 20, "no figures found: the parse is broken"
    assert not problems, "\n".join(problems)


def test_the_readme_keeps_the_test_command_ci_runs():
    readme = README.read_text(encoding="utf-8")
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", readme, re.M) and "make test-fast" in readme

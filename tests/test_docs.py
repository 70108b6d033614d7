"""The docs stay true to the code they describe: every test the security page names exists, so a promise it lists
is one a test holds the server to; the README stays the short front page; every page is in the site's nav; and
every `make` target, `aigc` command and option, module, name and source path the pages mention exists.

Cheap on purpose: files are read as text, the command line's click group is imported (that imports no backend
and no torch; the knob options read the backends' declarations only), and nothing is built or loaded.
`make docs` builds the site itself, strictly (broken links and anchors fail there)."""

from __future__ import annotations

import importlib
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 200


def test_every_test_the_security_page_names_exists():
    page = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    named, current = [], None
    for ref in re.findall(r"`((?:test_\w+\.py)(?:::test_\w+)?|::test_\w+)`", page):
        if ref.startswith("::"):  # `::test_x` goes on naming tests of the file named just before it
            named.append((current, ref[2:]))
        else:
            current, _, test = ref.partition("::")
            named.append((current, test or None))
    assert len(named) > 30, "the security page names fewer tests than it should; was it rewritten?"
    missing = [
        f"{file}::{test}"
        for file, test in named
        if not (ROOT / "tests" / file).is_file()
        or (test and not re.search(rf"^(async )?def {test}\(", (ROOT / "tests" / file).read_text(), re.M))
    ]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


# ---------------------------------------------------------------------------------------------- what the pages say


def _pages() -> dict[str, str]:
    """README.md and every page under docs/, by path relative to the repository."""
    pages = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for path in sorted(DOCS.rglob("*.md")):
        pages[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return pages


def _code(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The fenced code lines (with their block's language) and the inline code spans of a Markdown page."""
    lines, prose, fence, language = [], [], None, ""
    for line in text.splitlines():
        opening = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence is None and opening:
            fence, language = opening.group(1), opening.group(2).lower()
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            lines.append((language, line))
        else:
            prose.append(line)
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", "\n".join(prose))
    return lines, spans


def _shell_lines() -> list[tuple[str, str]]:
    """(page, text) of every shell-like snippet: fenced lines outside Python/TOML/YAML blocks, and code spans."""
    found = []
    for page, text in _pages().items():
        lines, spans = _code(text)
        found += [(page, line) for language, line in lines if language not in ("python", "py", "toml", "yaml", "yml")]
        found += [(page, span) for span in spans]
    return found


def test_the_readme_is_the_short_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = len(readme.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; the front page keeps to {README_MAX_LINES} and the manual lives in docs/"
    )
    assert re.search(r"^make test\b", readme, re.M), "the README no longer states the test command (`make test`)"
    assert "docs/" in readme, "the README links nothing in docs/"


def _nav_pages(nav) -> list[str]:
    found = []
    for entry in nav:
        if isinstance(entry, str):
            found.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                found += _nav_pages(value) if isinstance(value, list) else [value]
    return [page for page in found if not re.match(r"^[a-z]+://", page)]


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config.get("docs_dir", "docs") == "docs"
    nav = _nav_pages(config["nav"])
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert len(nav) == len(set(nav)), f"mkdocs.yml lists a page twice: {sorted(p for p in nav if nav.count(p) > 1)}"
    missing = sorted(set(nav) - pages)
    assert not missing, f"mkdocs.yml's nav names pages that docs/ lacks: {missing}"
    left_out = sorted(pages - set(nav))
    assert not left_out, f"pages under docs/ that mkdocs.yml's nav leaves out: {left_out}"


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_.$()/ -]+?)\s*::?(?!=)", makefile, re.M):
        targets |= set(match.group(1).split())
    return targets


def test_every_make_target_the_docs_name_exists():
    targets = _make_targets()
    assert {"setup", "demo", "test", "docs"} <= targets, f"the Makefile parser found only {sorted(targets)}"
    named = set()
    for page, text in _shell_lines():
        for match in re.finditer(r"(?:^|[;&|]\s*)\s*(?:\$\s+)?make\s+([a-z][\w-]*(?:\s+[a-z][\w-]*)*)", text):
            named |= {(page, target) for target in match.group(1).split()}
    assert {target for _, target in named} >= {"setup", "demo", "test", "docs"}, "found too few `make` targets"
    unknown = sorted(f"{page}: make {target}" for page, target in named if target not in targets)
    assert not unknown, f"the docs name make targets the Makefile does not have: {unknown}"


# ---------------------------------------------------------------------------------------------- the command line


@lru_cache(maxsize=1)
def _cli():
    click = pytest.importorskip("click")
    for name in ("aigc.cli.main", "aigc.cli"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for value in vars(module).values():
            if isinstance(value, click.Group) and "generate" in value.commands:
                return click, value
    pytest.fail("found no click group with a `generate` command in aigc.cli")


def _options(command) -> set[str]:
    click, group = _cli()
    context = click.Context(command, info_name=command.name)
    flags = {"--help", "-h"}
    for param in command.get_params(context):  # KnobCommand adds the backends' knobs here
        flags |= set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
    return flags


def _invocations() -> list[tuple[str, str, str]]:
    """(page, `aigc ...` as written, the rest of its line without a trailing comment)."""
    found = []
    for page, text in _shell_lines():
        for line in text.splitlines():
            line = re.sub(r"\s#\s.*$", "", line)  # a shell comment (a `#` inside a word stays)
            # a command starts a line (after a prompt `$` or VAR=value settings), a path, `&&`, `|`, `(` or a quote
            start = r"(?:^\s*(?:\$\s+)?(?:[A-Z_]+=\S*\s+)*|[/;&|(`]\s*)"
            for match in re.finditer(
                start + r"aigc\s+([a-z][\w-]*(?:/[a-z][\w-]*)?)(.*?)(?=\s(?:&&|\|\||;|\|)\s|`|$)", line
            ):
                found.append((page, match.group(1), match.group(2)))
    return found


def test_every_aigc_command_and_option_the_docs_name_exists():
    _, group = _cli()
    invocations = _invocations()
    assert len({command for _, command, _ in invocations}) >= 8, "found too few `aigc` commands in the docs"
    unknown, cache = [], {}
    for page, command, rest in invocations:
        for name in command.split("/"):  # `aigc generate/batch --<knob>` names both
            sub = group.commands.get(name)
            if sub is None:
                unknown.append(f"{page}: aigc {name} (no such command)")
                continue
            words = rest.split()
            if hasattr(sub, "commands") and words and re.fullmatch(r"[a-z][\w-]*", words[0]):
                if words[0] not in sub.commands:
                    unknown.append(f"{page}: aigc {name} {words[0]} (no such command)")
                    continue
                sub = sub.commands[words[0]]
            if sub not in cache:
                cache[sub] = _options(sub)
            for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)(?![\w<])", _unquoted(rest)):
                if flag not in cache[sub]:
                    unknown.append(f"{page}: aigc {name} ... {flag}")
    assert not unknown, f"the docs name aigc commands or options that do not exist: {sorted(set(unknown))}"


def _unquoted(text: str) -> str:
    """The words of a command line outside quotes (a prompt may hold dashes)."""
    try:
        return " ".join(w for w in shlex.split(text, posix=False) if w[:1] not in "\"'$")
    except ValueError:
        return re.sub(r"\"[^\"]*\"|'[^']*'", " ", text)


# ---------------------------------------------------------------------------------------------- modules and paths

PATH_SPAN = re.compile(r"^(?:aigc|tests|benchmarks|pipelines|assets|docs)/[\w./-]*$")
NOT_MODULES = {"aigc.db", "aigc.merged_with"}  # the server's database file; a field of an OpenAI answer


def _module_file(dotted: str) -> Path | None:
    base = ROOT / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _names() -> list[tuple[str, str]]:
    found = []
    for page, text in _pages().items():
        lines, spans = _code(text)
        for chunk in [line for _, line in lines] + spans + re.findall(r"^:::\s*(\S+)", text, re.M):
            found += [(page, m) for m in re.findall(r"(?<![\w./-])aigc(?:\.[A-Za-z_]\w*)+(?![\w-])", chunk)]
    return found


def test_every_module_and_name_the_docs_mention_exists():
    names = _names()
    assert len(names) > 20, "found too few aigc.* names in the docs"
    missing = []
    for page, dotted in sorted(set(names)):
        if dotted in NOT_MODULES:
            continue
        parts = dotted.split(".")
        depth = max((i for i in range(1, len(parts) + 1) if _module_file(".".join(parts[:i]))), default=0)
        if depth == len(parts):
            continue
        module = _module_file(".".join(parts[:depth]))
        if module is None or not re.search(rf"\b{re.escape(parts[depth])}\b", module.read_text(encoding="utf-8")):
            missing.append(f"{page}: {dotted}")
    assert not missing, f"the docs name aigc modules or names that do not exist: {missing}"


def test_every_source_path_the_docs_mention_exists():
    named = [(page, span) for page, text in _pages().items() for span in _code(text)[1] if PATH_SPAN.match(span)]
    assert len(named) > 10, "found too few source paths in the docs"
    missing = sorted(f"{page}: {path}" for page, path in named if not (ROOT / path.rstrip("/")).exists())
    assert not missing, f"the docs name files or folders the repository lacks: {missing}"


def test_the_architecture_page_describes_every_folder_and_top_level_module():
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "aigc"
    folders = sorted(
        p.relative_to(ROOT).as_posix() + "/" for p in package.rglob("*") if p.is_dir() and "__pycache__" not in p.parts
    )
    modules = sorted(p.name for p in package.glob("*.py") if p.name != "__init__.py")
    missing = [f for f in folders if f"`{f}`" not in page]
    missing += [m for m in modules if not re.search(rf"`(aigc/)?{m}`", page)]
    assert not missing, f"docs/architecture.md does not describe {missing}; the layout table lists each folder"

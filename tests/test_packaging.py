"""A source release builds, carries everything its Makefile reads and runs its own demo; its PyPI page has no
broken links.

The sdist is built with setuptools' PEP 517 backend, without build isolation or network, from a copy of the
working tree (never in place: the checkout's own egg-info would leak files listed by an earlier build, and a wheel
build would leave build/ behind). The copy gets the leftovers a used checkout has (caches, .venv, out/, runs/,
build/), so the exclusions are tested whatever state this checkout is in. The wheel is built from the unpacked
sdist, as `python -m build` does.
"""

from __future__ import annotations

import email.parser
import email.policy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs Python 3.11's tomllib or tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
IN_GIT = (ROOT / ".git").exists() and shutil.which("git") is not None
BRANCH = "main"  # the README's absolute links point at this branch of the Source repository
TARGETS = ("setup", "demo", "test")  # the Makefile targets a newcomer runs
# what a used checkout holds and a release must not (relative path -> content), planted into the copy
LEFTOVERS = {
    ".venv/pyvenv.cfg": "home = /usr/bin\n",
    ".venv/lib/python3/site-packages/left.py": "",
    "out/story.txt": "a story\n",
    "out/portrait.png": "\x89PNG",
    "runs/prompt_expansion-0/run.json": "{}\n",
    "build/lib/aigc/left.py": "",
    ".pytest_cache/v/cache/lastfailed": "{}\n",
    "tests/__pycache__/conftest.cpython-311-pytest-8.pyc": "pyc",
    "aigc/__pycache__/__init__.cpython-311.pyc": "pyc",
    "benchmarks/__pycache__/workloads.cpython-311.pyc": "pyc",
    "assets/left-behind.png": "\x89PNG",
}
LEFT_TOP = {".git", ".venv", "out", "runs", "build", ".pytest_cache"}  # a used checkout's own, not copied
UNWANTED_TOP = LEFT_TOP | {"assets"}  # the README's pictures stay in the repository
UNWANTED_ANYWHERE = {"__pycache__", ".pytest_cache"}


def _run(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _tail(proc: subprocess.CompletedProcess, lines: int = 15) -> str:
    return " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def _checkout_files(*folders: str) -> set[str]:
    """The files of these folders a clone (plus uncommitted work) has: git's view, never its ignored files."""
    if IN_GIT:
        listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *folders], ROOT)
        assert listed.returncode == 0, f"git ls-files failed: {_tail(listed)}"
        return {p for p in listed.stdout.split("\0") if p and (ROOT / p).is_file()}
    found = set()  # an unpacked source release: its own files, less caches
    for folder in folders:
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and not rel.endswith(".pyc"):
                found.add(rel)
    return found


def _copy_tree(dest: Path) -> None:
    def skip(folder: str, names: list[str]) -> set[str]:
        top = LEFT_TOP if Path(folder) == ROOT else set()
        return {n for n in names if n in top | UNWANTED_ANYWHERE or n.endswith(".egg-info")}

    shutil.copytree(ROOT, dest, ignore=skip, symlinks=True)
    for rel, content in LEFTOVERS.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(content, encoding="latin-1")


def _build(hook: str, source: Path, dist: Path) -> Path:
    """Call setuptools' PEP 517 `hook` in a fresh interpreter with `source` as its working directory."""
    dist.mkdir(exist_ok=True)
    code = f"import sys, setuptools.build_meta as b; print('BUILT', b.{hook}(sys.argv[1]))"
    proc = _run([sys.executable, "-c", code, str(dist)], source)
    assert proc.returncode == 0, f"setuptools {hook} failed in {source}: {_tail(proc)}"
    name = [line for line in proc.stdout.splitlines() if line.startswith("BUILT ")][-1].split(" ", 1)[1]
    return dist / name


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("release")
    source = base / "checkout"
    _copy_tree(source)
    sdist = _build("build_sdist", source, base / "dist")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        extract = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(base / "unpacked", **extract)
    top = base / "unpacked" / names[0].split("/")[0]
    wheel = _build("build_wheel", top, base / "dist")
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = zf.namelist()
        version = next(n for n in wheel_names if n.endswith(".dist-info/METADATA")).split("/")[0]
        wheel_meta = zf.read(f"{version}/METADATA").decode()
    prefix = top.name + "/"
    files = {n[len(prefix) :] for n in names if n.startswith(prefix) and (top / n[len(prefix) :]).is_file()}
    return {
        "sdist": sdist,
        "wheel": wheel,
        "top": top,
        "files": files,
        "wheel_names": wheel_names,
        "dist_info": version,
        "pkg_info": (top / "PKG-INFO").read_text(encoding="utf-8"),
        "wheel_meta": wheel_meta,
        "base": base,
    }


def _metadata(text: str):
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


# ---------------------------------------------------------------------------------------------- the Makefile


def _makefile() -> tuple[dict[str, str], dict[str, tuple[list[str], list[str]]]]:
    """Variables and rules (target -> prerequisites, recipe lines) of the Makefile, variables expanded."""
    variables: dict[str, str] = {}
    raw_rules: list[tuple[str, str, list[str]]] = []
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        if line.startswith("\t"):
            if raw_rules:
                raw_rules[-1][2].append(line.strip())
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assign = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|=)\s*(.*)$", line)
        rule = re.match(r"^([^\s:=#][^:=]*?)\s*:(?!=)\s*(.*)$", line)
        if assign:
            variables[assign.group(1)] = assign.group(3).split(" #")[0].strip()
        elif rule:
            raw_rules.append((rule.group(1), rule.group(2).split("#")[0], []))

    def expand(text: str) -> str:
        for _ in range(10):
            text = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), text)
        return text

    rules = {}
    for target, prereqs, recipe in raw_rules:
        for name in expand(target).split():
            rules[name] = (expand(prereqs).split(), [expand(r) for r in recipe])
    return variables | {k: expand(v) for k, v in variables.items()}, rules


def _reachable(rules: dict, targets) -> list[str]:
    seen: list[str] = []
    todo = list(targets)
    while todo:
        name = todo.pop(0)
        if name in rules and name not in seen:
            seen.append(name)
            todo += rules[name][0]
    return seen


def _files_the_makefile_names() -> dict[str, set[str]]:
    """target -> the repository files its rule (and the rules it depends on) reads: prerequisites that are
    files, the files after -r/-c, and path-like recipe arguments; never paths inside the virtualenv it makes."""
    variables, rules = _makefile()
    venv = variables.get("VENV", ".venv").rstrip("/") + "/"
    path_like = re.compile(r"^[\w.-]+(/[\w.-]+)*\.(yaml|yml|txt|toml|cfg|ini|json|py|in|md)$")
    named: dict[str, set[str]] = {}
    for target in TARGETS:
        assert target in rules, f"the Makefile has no {target!r} target"
        files: set[str] = set()
        for name in _reachable(rules, [target]):
            prereqs, recipe = rules[name]
            files |= {p for p in prereqs if p not in rules and not p.startswith(venv)}
            for line in recipe:
                words = shlex.split(line.lstrip("@-"))
                for before, word in pairwise(["", *words]):
                    if word.startswith(venv) or word.startswith("-"):
                        continue
                    if before in ("-r", "-c", "--requirement", "--constraint") or path_like.match(word):
                        files.add(word)
        named[target] = files
    return named


def test_the_makefile_parser_finds_what_setup_and_demo_read():
    named = _files_the_makefile_names()
    _, rules = _makefile()
    recipe = " ".join(line for name in _reachable(rules, ["setup"]) for line in rules[name][1])
    for flag in ("-r", "-c"):
        after = re.findall(rf"(?:^|\s){flag}\s+(\S+)", recipe)
        assert after, f"the setup recipe names no {flag} file; this test's Makefile parser needs updating"
        assert set(after) <= named["setup"], f"the parser missed the setup's {flag} files {after}"
    assert any(f.endswith((".yaml", ".yml")) for f in named["demo"]), f"no recipe found in the demo: {named['demo']}"


def test_every_file_the_makefile_reads_is_in_the_sdist(release):
    for target, files in _files_the_makefile_names().items():
        missing = sorted(f for f in files if f not in release["files"])
        assert not missing, f"`make {target}` reads {missing}, which the sdist lacks"
    for folder in PYPROJECT["tool"]["pytest"]["ini_options"].get("testpaths", []):
        assert (release["top"] / folder).is_dir(), f"`make test` runs pytest on {folder}/, which the sdist lacks"


def test_sdist_carries_the_makefile_pipelines_tests_and_license(release):
    files = release["files"]
    wanted = {"Makefile", "pyproject.toml", "README.md", *PROJECT.get("license-files", ["LICENSE"])}
    for match in re.finditer(r"(?:^|\s)-[rc]\s+(\S+)", (ROOT / "Makefile").read_text(encoding="utf-8")):
        wanted.add(match.group(1))
    wanted |= _checkout_files("pipelines", "tests", "benchmarks")
    missing = sorted(wanted - files)
    assert not missing, f"the sdist lacks {len(missing)} file(s) of the checkout: {missing[:12]}"
    assert any(f.startswith("pipelines/") and f.endswith(".yaml") for f in files), "the sdist has no pipelines/*.yaml"


def _package_files() -> set[str]:
    """aigc/'s modules and the package data pyproject declares (the studio's pages, styles and scripts)."""
    data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    found = set()
    for rel in _checkout_files("aigc"):
        package = ".".join(Path(rel).parent.parts)
        if rel.endswith(".py") or any(fnmatch.fnmatch(Path(rel).name, g) for g in data.get(package, [])):
            found.add(rel)
    return found


def test_sdist_and_wheel_carry_the_whole_package_with_its_studio(release):
    package = _package_files()
    studio = {f for f in package if f.startswith("aigc/studio/") and not f.endswith(".py")}
    assert studio, "found no studio files under aigc/studio/ matching pyproject's package-data"
    missing = sorted(package - release["files"])
    assert not missing, f"the sdist lacks package files {missing[:12]}"
    missing = sorted(package - set(release["wheel_names"]))
    assert not missing, f"the wheel lacks package files {missing[:12]}"


def test_sdist_leaves_out_caches_environments_outputs_and_pictures(release):
    unwanted = sorted(
        f
        for f in release["files"]
        if Path(f).parts[0] in UNWANTED_TOP or UNWANTED_ANYWHERE & set(Path(f).parts) or f.endswith((".pyc", ".pyo"))
    )
    assert not unwanted, f"the sdist carries {len(unwanted)} leftover file(s): {unwanted[:12]}"


def test_wheel_carries_only_the_package(release):
    info = release["dist_info"] + "/"
    others = sorted(n for n in release["wheel_names"] if not (n.startswith("aigc/") or n.startswith(info)))
    assert not others, f"the wheel carries files outside aigc/ and its dist-info: {others[:12]}"
    cached = sorted(n for n in release["wheel_names"] if "__pycache__" in n or n.endswith(".pyc"))
    assert not cached, f"the wheel carries caches: {cached[:12]}"
    for license_file in PROJECT.get("license-files", []):
        assert f"{info}licenses/{license_file}" in release["wheel_names"], f"the wheel lacks {license_file}"


# ---------------------------------------------------------------------------------------------- metadata


def test_metadata_has_project_urls_license_and_markdown_description(release):
    urls = PROJECT.get("urls", {})
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls), f"pyproject's [project.urls]: {urls}"
    for where in ("pkg_info", "wheel_meta"):
        meta = _metadata(release[where])
        declared = {tuple(v.split(", ", 1)) for v in meta.get_all("Project-URL", [])}
        assert declared == set(urls.items()), f"{where} Project-URL lines {sorted(declared)} != pyproject's {urls}"
        content_type = meta.get("Description-Content-Type", "")
        assert content_type.startswith("text/markdown"), f"{where}: Description-Content-Type is {content_type!r}"
        if isinstance(PROJECT.get("license"), str):
            expression = meta.get("License-Expression")
            assert expression == PROJECT["license"], f"{where}: License-Expression {expression!r}"
        else:
            assert meta.get("License"), f"{where} has no License line"
        license_files = meta.get_all("License-File", [])
        assert set(PROJECT.get("license-files", ["LICENSE"])) <= set(license_files), (
            f"{where}: License-File lines {license_files}"
        )


def test_license_file_is_the_apache_license(release):
    assert PROJECT["license"] == "Apache-2.0", f"pyproject's license is {PROJECT['license']!r}; update this test"
    text = (release["top"] / "LICENSE").read_text(encoding="utf-8")
    head = " ".join(text.split()[:6])
    assert head == "Apache License Version 2.0, January 2004", f"LICENSE starts {head!r}"
    sections = [
        "Definitions",
        "Grant of Copyright License",
        "Grant of Patent License",
        "Redistribution",
        "Submission of Contributions",
        "Trademarks",
        "Disclaimer of Warranty",
        "Limitation of Liability",
        "Accepting Warranty or Additional Liability",
    ]
    for number, title in enumerate(sections, 1):
        assert f"{number}. {title}." in text, f"LICENSE lacks section {number}. {title}"
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000, "LICENSE is not the full Apache-2.0 text"


# ---------------------------------------------------------------------------------------------- the README on PyPI


def _link_targets(markdown: str) -> list[str]:
    """Every inline link or image target, reference definition and HTML src/href, outside code."""
    text = re.sub(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", "", markdown, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]+`", "", text)
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)", text)
    targets += re.findall(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)", text, flags=re.M)
    targets += re.findall(r"""<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)""", text, flags=re.I)
    return targets


def _long_description(release) -> str:
    description = _metadata(release["pkg_info"]).get_payload()
    assert len(description) > 1000, "PKG-INFO carries no long description"
    return description


def test_readme_on_pypi_has_only_absolute_links(release):
    targets = _link_targets(_long_description(release))
    assert targets, "found no link in the long description"
    relative = sorted({t for t in targets if not re.match(r"^(https?://|mailto:|#)", t)})
    assert not relative, f"PyPI cannot resolve these relative README targets: {relative[:12]}"


def _repository_prefixes() -> dict[str, str]:
    source = PROJECT["urls"]["Source"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", source)
    assert match, f"Source {source!r} is not a https://github.com/OWNER/NAME address"
    owner, name = match.groups()
    return {
        "source": source,
        "owner": owner.lower(),
        "name": name.lower(),
        "blob": f"{source}/blob/{BRANCH}/",
        "tree": f"{source}/tree/{BRANCH}/",
        "raw": f"https://raw.githubusercontent.com/{owner}/{name}/{BRANCH}/",
    }


def test_readme_links_into_the_repository_start_with_source_and_name_its_files(release):
    if not IN_GIT:
        pytest.skip("needs the git checkout: a source release leaves out the pictures these links name")
    prefixes = _repository_prefixes()
    checkout = _checkout_files(".")
    into_repo, wrong, missing = [], [], []
    for url in _link_targets(_long_description(release)):
        parts = re.match(r"^https?://(?:www\.)?(github\.com|raw\.githubusercontent\.com)/([^/#?]+)/([^/#?]+)", url)
        if not parts:
            continue
        owner, name = parts.group(2).lower(), parts.group(3).lower()
        if owner != prefixes["owner"] and name != prefixes["name"]:
            continue  # another project's page (one with our owner or our name counts as ours, so typos show)
        into_repo.append(url)
        start = next((p for p in (prefixes["blob"], prefixes["tree"], prefixes["raw"]) if url.startswith(p)), None)
        if start is None:
            if not re.match(re.escape(prefixes["source"]) + r"(/issues\b.*|/?#.*|/?)$", url):
                wrong.append(url)
            continue
        path = re.split(r"[?#]", url[len(start) :])[0].rstrip("/")
        if start == prefixes["tree"]:
            exists = any(f.startswith(path + "/") for f in checkout)
        else:
            exists = path in checkout
        if not exists:
            missing.append(path)
    assert into_repo, "the README links nothing in the repository (expected its pictures)"
    assert not wrong, f"README links into the repository that do not start with Source/{BRANCH}: {wrong[:6]}"
    assert not missing, f"README links name paths the checkout lacks (or git ignores): {missing[:12]}"


def test_twine_check_passes_on_sdist_and_wheel(release):
    pytest.importorskip("twine", reason="twine is not installed (it comes with pip install -e '.[dev]')")
    proc = _run(
        [sys.executable, "-m", "twine", "check", "--strict", str(release["sdist"]), str(release["wheel"])],
        release["base"],
    )
    assert proc.returncode == 0, f"twine check --strict failed: {_tail(proc)}"
    assert proc.stdout.count("PASSED") == 2, f"twine check did not pass both files: {_tail(proc)}"


# ---------------------------------------------------------------------------------------------- the demo


def test_make_accepts_the_unpacked_sdist(release):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = _run(["make", "-n", *TARGETS], release["top"])
    assert proc.returncode == 0, f"`make -n {' '.join(TARGETS)}` fails in the unpacked sdist: {_tail(proc)}"


@pytest.mark.pack
def test_source_release_runs_its_own_workflow_demo(release, tmp_path):
    """The demo's `aigc run` line from the Makefile, run in the unpacked sdist with the installed aigc. Its text
    steps make 8 tokens instead of the recipe's 60: the full line took 124-150 s on a loaded 2-core machine."""
    _, rules = _makefile()
    lines = [shlex.split(line) for name in _reachable(rules, ["demo"]) for line in rules[name][1]]
    runs = [w for w in lines if len(w) > 2 and Path(w[0]).name == "aigc" and w[1] == "run"]
    assert runs, "the Makefile's demo has no `aigc run RECIPE` line"
    words = runs[0]
    args = [w for i, w in enumerate(words[1:], 1) if w not in ("--out", "-o") and words[i - 1] not in ("--out", "-o")]
    recipe = release["top"] / args[1]
    steps = yaml.safe_load(recipe.read_text(encoding="utf-8"))["steps"]
    for step in steps:
        if step.get("kind") == "text":
            args += ["--set", f"{step['name']}.max_new_tokens=8"]
    aigc = shutil.which("aigc", path=str(Path(sys.executable).parent)) or shutil.which("aigc")
    assert aigc, "the aigc command is not installed next to this Python"
    out = tmp_path / "run"
    proc = _run([aigc, *args, "--out", str(out)], release["top"], timeout=600, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, f"`aigc {' '.join(args)}` failed in the unpacked sdist: {_tail(proc)}"
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    made = [a["file"] for step in run["steps"] for a in step["assets"]]
    assert len(run["steps"]) == len(steps) and made, f"run.json records steps {[s['name'] for s in run['steps']]}"
    absent = [f for f in made if not (out / f).is_file()]
    assert not absent, f"run.json names files the run did not write: {absent}"

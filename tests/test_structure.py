"""The shape of the package: layers that only import downward (no cycles, not even inside functions), and a
backend's knobs owned by its declaration alone, which every front end reads."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import aigc

PACKAGE = Path(aigc.__file__).parent
# lowest first; a module may import its own layer and the layers below it, never one above
LAYERS = [
    {"errors", "records", "seeds", "storage", "limits", "checks", "progress"},  # the foundation, at the top level
    {"media", "runtime", "console"},  # what is made and read back; where models come from and run
    {"generators"},  # the backends: handed a model and a device, they read files below them (a GAN prior: media)
    {"scoring"},  # the scorer and the team library; its loop drives a generator
    {"tuning"},  # learns from ratings and scores, toward what the team liked
    {"api"},
    {"orchestration"},  # workflows, recipes, batches and their pages
    {"client"},  # the remote front end: the module's verbs over HTTP
    {"cli", "server"},
]


def _imports() -> dict[str, set[str]]:
    """Module -> the aigc modules it imports, from every import statement (inside functions too)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "aigc"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base.split(".")[0] != "aigc":
                    continue
                for alias in node.names:  # `from . import registry` imports a module; `from .x import y` a name
                    candidate = f"{base}.{alias.name}"
                    found.add(
                        candidate
                        if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists()
                        or (PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                        else base
                    )
    return {m: {i for i in imports if i != m} for m, imports in graph.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_no_module_imports_in_a_cycle():
    graph = {m: deps - {"aigc"} for m, deps in _imports().items() if m != "aigc"}  # __init__ only hands names on
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_every_import_goes_down_the_layers():
    upward = [
        (m, i) for m, deps in _imports().items() if m != "aigc" for i in deps if i != "aigc" and _layer(i) > _layer(m)
    ]
    assert not upward, f"imports that go up a layer: {upward}"
    assert "aigc" not in set().union(*(deps for m, deps in _imports().items() if m != "aigc"))


SWATCH = '''
from aigc.generators.base import Generator, Output, Param


class SwatchGenerator(Generator):
    """A third-party image backend: a flat swatch of one hue. It declares its knobs and nothing else."""

    kind = "image"
    family = "swatch"
    params = {"hue": Param(0.5, "the swatch's hue", "float", 0.0, 1.0, a1111="Hue"),
              "side": Param(16, "side in pixels", "int", 8, 64)}

    def load(self):
        return None

    def forward(self, model, items, params):
        import colorsys

        from PIL import Image

        rgb = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(params["hue"], 1.0, 1.0))
        return [Output(Image.new("RGB", (params["side"],) * 2, rgb)) for _ in items]
'''


@pytest.fixture
def swatch(tmp_path, monkeypatch):
    """A plug-in distribution on sys.path: a module and a .dist-info with an `aigc.generators` entry point."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "aigc_swatch.py").write_text(SWATCH)
    info = root / "aigc_swatch-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aigc-swatch\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aigc.generators]\nimage.swatch = aigc_swatch:SwatchGenerator\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("aigc_swatch", None)


def test_a_plugins_knob_reaches_every_front_end(swatch, tmp_path, manager):
    from PIL import Image

    from aigc.orchestration.recipes import load_recipe

    png = aigc.generate("image", "x", backend="swatch", model="any", hue=0.25, seed=1, manager=manager)[0]
    with Image.open(png.save(tmp_path / "s.png")) as image:
        assert "Hue: 0.25" in image.text["parameters"]  # the A1111 string reads the knob's own label
    with pytest.raises(aigc.ConfigError, match=r"hue=3.0 is out of range; it must be >= 0.0 and <= 1.0"):
        aigc.generate("image", "x", backend="swatch", model="any", hue=3, manager=manager)

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps:\n  - name: chip\n    kind: image\n    backend: swatch\n    model: any\n"
        "    prompt: a chip\n    params:\n      hue: 0.75\n"
    )
    assert aigc.run(recipe)["chip"][0].params["hue"] == 0.75
    recipe.write_text(recipe.read_text().replace("hue: 0.75", "hue: 7"))
    with pytest.raises(aigc.ConfigError, match=r"r.yaml:8: steps.0.params.hue: hue=7.0 is out of range"):
        load_recipe(recipe)

    (tmp_path / "rows.csv").write_text("prompt,hue\nred chip,0.0\nbad chip,7\n")
    summary = aigc.batch(tmp_path / "rows.csv", tmp_path / "batch", kind="image", backend="swatch", model="any")
    assert summary.made == 1 and "hue=7.0 is out of range" in summary.failed[0]["reason"]


def test_a_plugins_knob_is_a_command_line_option(swatch, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(swatch), os.environ.get("PYTHONPATH", "")])}
    aigc_bin = str(Path(sys.executable).parent / "aigc")

    def run(*args):
        return subprocess.run([aigc_bin, *args], capture_output=True, text=True, env=env, timeout=300)

    help_text = run("generate", "--help").stdout
    assert "--hue NUMBER" in help_text and "image (swatch): the swatch's hue" in help_text
    made = run(
        "generate",
        "image",
        "x",
        "--backend",
        "swatch",
        "--model",
        "any",
        "--hue",
        "0.5",
        "--side",
        "8",
        "--seed",
        "2",
        "--json",
        "--out",
        str(tmp_path / "out"),
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["params"] == {"hue": 0.5, "side": 8}
    bad = run("generate", "image", "x", "--backend", "swatch", "--model", "any", "--hue", "9")
    assert bad.returncode == 1 and bad.stderr.strip() == "error: hue=9.0 is out of range; it must be >= 0.0 and <= 1.0."
    assert "--hue" in run("batch", "--help").stdout


def test_every_front_end_reads_one_declaration():
    """The CLI carries no copied defaults: each knob option's help is the Param's own description."""
    from aigc.cli.knobs import knob_options
    from aigc.generators.text.causal_lm import CausalLMGenerator

    option = next(o for o in knob_options() if o.name == "knob__temperature")
    assert CausalLMGenerator.params["temperature"].describe() in option.help
    assert option.default is None  # the backend's default applies, not one written into the CLI


def test_contact_sheets_refuse_nothing_with_an_aigc_error():
    from aigc.media.sheets import contact_sheet

    with pytest.raises(aigc.ConfigError, match="needs at least one image"):
        contact_sheet([])


def test_help_for_every_knob_imports_no_torch():
    """`aigc generate --help` imports every backend to list its knobs, so backend modules keep torch lazy."""
    code = (
        "import sys; from aigc.cli import cli; cli.main(['generate', '--help'], standalone_mode=False);"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--truncation" in done.stdout and "--steps" in done.stdout

"""Workflows: chained steps in Python and YAML recipes, checked before loading, replayed exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.orchestration.recipes import load_recipe, replay, run_to_dir
from aigc.orchestration.workflows import Pipeline, Step, check, run
from aigc.runtime.devices import DeviceManager

RECIPES = sorted(Path(__file__).parent.parent.joinpath("pipelines").glob("*.yaml"))
SHORT = {"max_new_tokens": 24}  # keep the real SmolLM2 steps quick in tests


def shortened(path: Path) -> Pipeline:
    pipeline = load_recipe(path)
    for step in pipeline.steps:
        if step.kind == "text":
            step.params.update(SHORT)
        if step.best_of:
            step.best_of = max(step.n, 2)
    return pipeline


@pytest.mark.pack
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_runs_offline_and_writes_its_run_directory(recipe, tmp_path):
    assert len(RECIPES) >= 3
    run_json = run_to_dir(shortened(recipe), {}, tmp_path, seed=1, manager=DeviceManager("cpu"), source=str(recipe))
    record = json.loads(run_json.read_text())
    page = (tmp_path / "index.html").read_text()
    files = [a["file"] for step in record["steps"] for a in step["assets"]]
    assert files and all((tmp_path / f).exists() for f in files)
    assert all(f in page for f in files)  # the page shows every asset of the chain
    assert [s["name"] for s in record["steps"]] == [s["name"] for s in record["pipeline"]["steps"]]
    for step in record["steps"][1:]:
        assert all(a["workflow"]["parents"] for a in step["assets"])  # linked to what it came from


@pytest.mark.pack
def test_replay_reproduces_text_bytes_and_image_pixels(tmp_path):
    from PIL import Image

    manager = DeviceManager("cpu")
    first = run_to_dir(
        shortened(RECIPES[[r.stem for r in RECIPES].index("prompt_expansion")]),
        {"prompt": "a harbour"},
        tmp_path / "a",
        seed=4,
        manager=manager,
    )
    again = replay(first, tmp_path / "b", manager=manager)
    texts = sorted((tmp_path / "a").glob("*.txt"))
    images = sorted((tmp_path / "a").glob("*.png"))
    assert texts and images
    for path in texts:
        assert path.read_bytes() == (again.parent / path.name).read_bytes()
    for path in images:
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again.parent / path.name)))


def test_fan_out_provenance_and_release_of_finished_models(tiny_gpt2, tiny_dcgan):
    manager = DeviceManager("cpu")
    produced = aigc.chain(
        Step("ideas", "text", "Ideas about {topic}", model=tiny_gpt2, n=2, params={"max_new_tokens": 5}),
        Step("pictures", "image", "{ideas}", backend="gan", model=tiny_dcgan, n=2),
        topic="the sea",
        seed=3,
        manager=manager,
    )
    assert len(produced["ideas"]) == 2 and len(produced["pictures"]) == 4  # 2 per idea
    parents = [a.workflow.parents for a in produced["pictures"]]
    assert parents == [["ideas-0"], ["ideas-0"], ["ideas-1"], ["ideas-1"]]
    assert produced["pictures"][2].prompt == produced["ideas"][1].data.strip()
    assert {m["backend"] for m in manager.stats()["models"]} <= {"dcgan"}  # the text model was released


def test_image_to_image_takes_an_earlier_image(tiny_sd):
    manager = DeviceManager("cpu")
    base = {"steps": 2, "width": 64, "height": 64}
    produced = run(
        Pipeline(
            [
                Step("sketch", "image", "a castle", backend="diffusion", model=tiny_sd, params=base),
                Step(
                    "painting",
                    "image",
                    "a castle, oil painting",
                    backend="diffusion",
                    model=tiny_sd,
                    input="sketch",
                    params={"steps": 4, "strength": 0.5},
                ),
            ]
        ),
        seed=1,
        manager=manager,
    )
    assert produced["painting"][0].data.size == (64, 64)
    assert produced["painting"][0].workflow.parents == ["sketch-0"]


@pytest.mark.parametrize(
    "steps, message",
    [
        ([Step("a", "text", "about {nothing}")], r"unknown placeholder \{nothing\}"),
        ([Step("a", "text", "{b}"), Step("b", "text", "{a}")], "cycle"),
        ([Step("pic", "image", "x", backend="gan"), Step("t", "text", "describe {pic}")], "is an image step"),
        (
            [Step("pic", "image", "x", backend="gan"), Step("t", "text", "x", input="pic")],
            "passes an image to an image step",
        ),
        (
            [Step("pic", "image", "x", backend="gan"), Step("p2", "image", "x", backend="gan", input="pic")],
            "takes no input image; use backend: diffusion",
        ),
        ([Step("a", "text", "x", params={"temprature": 1})], "unknown parameter 'temprature'"),
        ([Step("a", "video", "x")], "kind='video' is not supported"),
        ([Step("a", "text", "x"), Step("a", "text", "y")], "share a name"),
        ([Step("a", "text", "x", join=True)], "join only applies to audio"),
    ],
)
def test_bad_pipelines_fail_before_any_model_loads(steps, message):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match=message):
        run(Pipeline(steps, {"topic": "t"}), manager=manager)
    assert manager.stats()["loads"] == 0


def test_unknown_inputs_are_refused():
    with pytest.raises(aigc.ConfigError, match="unknown input 'topik'; this pipeline takes: topic"):
        check(Pipeline([Step("a", "text", "{topic}")], {"topic": "x"}), {"topik": "y"})


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "steps:\n  - name: a\n    kind: video\n    prompt: x\n",
            r":3: steps\.0\.kind: Input should be 'text', 'image' or 'audio'",
        ),
        (
            "inputs: {t: x}\nsteps:\n  - name: a\n    kind: text\n    prompt: x\n    colour: red\n",
            r":6: steps\.0\.colour: Extra inputs are not permitted",
        ),
        ("steps:\n  - name: a\n    kind: text\n    prompt: x\n    n: 0\n", r":5: steps\.0\.n: Input should be greater"),
        ("steps: [\n", r":2: not valid YAML"),
        ("inputs: {}\n", r":1: steps: Field required"),
    ],
)
def test_recipe_errors_name_the_line_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(aigc.ConfigError, match=message):
        load_recipe(path)


def test_aigc_run_on_the_command_line(tiny_gpt2, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"inputs: {{topic: the sea}}\nsteps:\n  - name: line\n    kind: text\n    model: {tiny_gpt2}\n"
        "    prompt: 'A line about {topic}'\n    params: {max_new_tokens: 4}\n"
    )
    aigc_bin = str(Path(sys.executable).parent / "aigc")
    done = subprocess.run(
        [
            aigc_bin,
            "run",
            str(recipe),
            "--set",
            "topic=glass",
            "--set",
            "line.max_new_tokens=6",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    asset = record["steps"][0]["assets"][0]
    assert asset["prompt"] == "A line about glass" and asset["params"]["max_new_tokens"] == 6
    bad = subprocess.run([aigc_bin, "run", str(recipe), "--set", "topik=x"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown input 'topik'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_run_never_overwrites_an_earlier_run(tiny_gpt2, tmp_path):
    pipeline = Pipeline([Step("line", "text", "The sea", model=tiny_gpt2, params={"max_new_tokens": 3})])
    run_to_dir(pipeline, {}, tmp_path, manager=DeviceManager("cpu"))
    before = (tmp_path / "line-0.txt").read_bytes()
    with pytest.raises(aigc.ConfigError, match="already holds a run"):
        run_to_dir(pipeline, {}, tmp_path, seed=9, manager=DeviceManager("cpu"))
    assert (tmp_path / "line-0.txt").read_bytes() == before


def test_aigc_run_from_python(tiny_gpt2, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"inputs: {{topic: the sea}}\nsteps:\n  - name: line\n    kind: text\n    model: {tiny_gpt2}\n"
        "    prompt: 'A line about {topic}'\n    params: {max_new_tokens: 4}\n"
    )
    produced = aigc.run(recipe, topic="glass", seed=4)
    assert produced["line"][0].prompt == "A line about glass"
    run_json = aigc.run(recipe, tmp_path / "run", topic="glass", seed=4)
    assert json.loads(run_json.read_text())["steps"][0]["assets"][0]["text"] == produced["line"][0].data

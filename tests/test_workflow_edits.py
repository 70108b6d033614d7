"""Editing in workflows: a step takes an earlier image step's image as its mask or a ControlNet's control image
({step: NAME}), in Python and in a YAML recipe, and a wrong reference fails before any load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import aigc
from aigc.orchestration.recipes import run_to_dir
from aigc.orchestration.workflows import Pipeline, Step, run
from aigc.runtime.devices import DeviceManager

BASE = {"steps": 2, "width": 64, "height": 64}


def test_a_step_takes_earlier_images_as_its_mask_and_control_image(tiny_sd, tiny_controlnet, tmp_path):
    manager = DeviceManager("cpu")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.save(tmp_path / "left.png")
    pipeline = Pipeline(
        [
            Step("scene", "image", "a street", model=tiny_sd, params=BASE),
            Step("mask", "image", "a mask", model=tiny_sd, params=BASE),
            Step(
                "fixed",
                "image",
                "a street at night",
                model=tiny_sd,
                input="scene",
                params={"steps": 2, "mask": str(tmp_path / "left.png"), "mask_blur": 0},
            ),
            Step(
                "steered",
                "image",
                "a street, drawn",
                model=tiny_sd,
                params={
                    "steps": 2,
                    "control": [{"model": tiny_controlnet, "image": {"step": "scene"}, "preprocess": "canny"}],
                },
            ),
            Step(
                "masked",
                "image",
                "a street",
                model=tiny_sd,
                input="scene",
                params={"steps": 2, "mask": {"step": "mask"}},
            ),
        ]
    )
    produced = run(pipeline, seed=3, manager=manager)
    scene = np.asarray(produced["scene"][0].data)
    fixed = np.asarray(produced["fixed"][0].data)
    assert np.array_equal(fixed[:, 32:], scene[:, 32:])  # the file mask's black half is the scene's, exactly
    assert produced["steered"][0].workflow.parents == ["scene-0"]
    assert produced["steered"][0].data.size == (64, 64)
    assert sorted(produced["masked"][0].workflow.parents) == ["mask-0", "scene-0"]


def test_a_recipe_names_the_step_whose_image_is_the_mask(tiny_sd, tmp_path):
    recipe = tmp_path / "repaint.yaml"
    recipe.write_text(
        f"""
steps:
  - name: scene
    kind: image
    prompt: a harbour
    model: {tiny_sd}
    params: {{steps: 2, width: 64, height: 64}}
  - name: repainted
    kind: image
    prompt: a harbour in fog
    model: {tiny_sd}
    input: scene
    params:
      steps: 2
      mask: {{step: scene}}
      inpaint_area: masked
"""
    )
    out = tmp_path / "run"
    run_to_dir(aigc.orchestration.recipes.load_recipe(recipe), {}, out, seed=2)
    images = sorted(out.glob("repainted*.png"))
    assert images and Image.open(images[0]).size == (64, 64)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"mask": {"step": "nowhere"}}, r"\{step: nowhere\} takes an earlier image step's image; 'nowhere' is no step"),
        ({"mask": {"step": "words"}}, r"'words' is not an image step"),
        ({"mask": {"step": "later"}}, r"cycle"),
    ],
)
def test_a_wrong_step_reference_fails_before_any_load(tiny_sd, params, message):
    manager = DeviceManager("cpu")
    steps = [
        Step("words", "text", "x"),
        Step("edit", "image", "x", model=tiny_sd, input="later", params=params) if "later" in str(params) else None,
        Step("later", "image", "x", model=tiny_sd, input="edit", params={"steps": 2})
        if "later" in str(params)
        else None,
        Step("pic", "image", "x", model=tiny_sd, params=BASE),
        Step("edit2", "image", "x", model=tiny_sd, input="pic", params=params) if "later" not in str(params) else None,
    ]
    with pytest.raises(aigc.ConfigError, match=message):
        run(Pipeline([s for s in steps if s is not None]), manager=manager)
    assert manager.stats()["loads"] == 0


def test_batch_rows_name_their_own_image_and_mask_files(tiny_sd, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (64, 64), (30, 30, 200)).save(tmp_path / "blue.png")
    left, right = Image.new("L", (64, 64), 0), Image.new("L", (64, 64), 0)
    left.paste(255, (0, 0, 32, 64))
    right.paste(255, (32, 0, 64, 64))
    left.save(tmp_path / "left.png")
    right.save(tmp_path / "right.png")
    rows = f"prompt,init_image,mask\na door,{tmp_path / 'red.png'},{tmp_path / 'left.png'}\n"
    rows += f"a window,{tmp_path / 'blue.png'},{tmp_path / 'right.png'}\n"
    (tmp_path / "edits.csv").write_text(rows)
    out = tmp_path / "out"
    aigc.batch(tmp_path / "edits.csv", out, kind="image", model=tiny_sd, seed=1, steps=2, mask_blur=0)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    kept = {record["prompt"]: np.asarray(aigc.load(out / record["file"]).data) for record in records}
    assert (kept["a door"][:, 32:] == (200, 30, 30)).all()  # the right half kept, the left repainted
    assert (kept["a window"][:, :32] == (30, 30, 200)).all()

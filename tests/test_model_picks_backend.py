"""Without backend=, the model reference decides it, from the model's own files and without loading weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aigc
from aigc.runtime import registry
from aigc.runtime.devices import DeviceManager
from aigc.runtime.models import pack_path

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


@pytest.fixture(scope="module")
def gan_safetensors(tiny_dcgan, tmp_path_factory):
    from safetensors.torch import save_file

    state = torch.load(tiny_dcgan, weights_only=True)["netG_state_dict"]
    path = tmp_path_factory.mktemp("gan-st") / "faces.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="module")
def sd_single_file(tmp_path_factory):
    """The header of an original SD checkpoint (its tensor names), with tiny tensors."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("sd-st") / "v1-5-pruned.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
            "first_stage_model.decoder.conv_in.weight": torch.zeros(1),
        },
        path,
    )
    return path


def test_each_kind_of_model_reference_picks_its_backend(
    tiny_sd, tiny_dcgan, gan_safetensors, sd_single_file, tiny_gpt2, tiny_musicgen, tiny_vits
):
    picks = {
        ("image", tiny_sd): "diffusion",  # a diffusers directory, though the image default here is the GAN
        ("image", tiny_dcgan): "gan",
        ("image", str(gan_safetensors)): "gan",
        ("image", str(sd_single_file)): "diffusion",
        ("text", tiny_gpt2): "lm",
        ("text", "pack:smollm2"): "lm",
        ("audio", tiny_musicgen): "music",
        ("audio", tiny_vits): "speech",
        ("audio", str(pack_path("piper-joe"))): "speech",
    }
    assert registry.default_backend("image") == "gan"
    for (kind, model), backend in picks.items():
        assert registry.get(kind, model=model).name == backend, (kind, model)
    assert registry.get("image", "gan", model=tiny_sd).name == "gan"  # an explicit backend always wins


def test_a_diffusers_directory_generates_without_naming_the_backend(tiny_sd):
    manager = DeviceManager("cpu")
    asset = aigc.generate("image", "a red fox", model=tiny_sd, steps=2, height=64, width=64, seed=1, manager=manager)[0]
    assert asset.backend == "diffusion" and asset.data.size == (64, 64)
    done = subprocess.run(
        [
            AIGC,
            "generate",
            "image",
            "a red fox",
            "--model",
            tiny_sd,
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "1",
            "--json",
            "--out",
            str(Path(tiny_sd).parent / "cli-out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["backend"] == "diffusion"


def test_a_model_no_backend_of_the_kind_runs_says_what_was_tried(tiny_sd, tiny_gpt2, tmp_path):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ModelLoadError, match=r"fits no text backend; tried lm, gpt2: .*no config.json"):
        aigc.generate("text", "Hello", model=tiny_sd, manager=manager)
    with pytest.raises(
        aigc.ModelLoadError,
        match=r"fits no image backend; tried gan: a GAN is one weights file.*"
        r"diffusion: .*a transformers model",
    ):
        aigc.generate("image", "Hello", model=tiny_gpt2, manager=manager)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(aigc.ModelLoadError, match=r"BertModel \('bert'\), not a causal language model"):
        aigc.generate("text", "Hello", model=str(tmp_path), manager=manager)
    assert manager.stats()["loads"] == 0

"""The Stable Diffusion generator on a tiny random pipeline: sizes, seeds, batching, img2img, schedulers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SD_SIZE as SIZE

from aigc.errors import ConfigError, ModelLoadError
from aigc.generators.image.diffusion import SCHEDULERS, DiffusionGenerator
from aigc.runtime.devices import DeviceManager


@pytest.fixture(scope="module")
def sd_manager() -> DeviceManager:
    """One manager for the module, so the tiny pipeline loads once."""
    return DeviceManager("cpu")


def run(model, manager, prompts, seeds, **given):
    given = {"steps": 2, "width": SIZE, "height": SIZE, **given}
    params = DiffusionGenerator.check_params(given)
    return DiffusionGenerator(model, manager, backend="diffusion").generate(prompts, seeds, **params)


def pixels(output) -> np.ndarray:
    return np.asarray(output.data, dtype=np.int16)


def test_text_to_image_returns_images_of_the_requested_size(tiny_sd, sd_manager):
    outs = run(tiny_sd, sd_manager, ["a castle", "a cat"], [1, 2])
    assert [(o.data.mode, o.data.size) for o in outs] == [("RGB", (SIZE, SIZE))] * 2
    assert outs[0].info == {
        "width": SIZE,
        "height": SIZE,
        "steps": 2,
        "guidance": 7.5,
        "scheduler": "PNDMScheduler",
        "fast": ["aigc-loop", "prompt-reuse", "batched-cfg", "fused-qkv", "sdpa"],
    }  # no channels-last on CPU
    wide = run(tiny_sd, sd_manager, ["a castle"], [1], width=96)[0]
    assert wide.data.size == (96, SIZE)
    native = run(tiny_sd, sd_manager, ["a castle"], [1], width=None, height=None)[0]
    assert native.data.size == (SIZE, SIZE)  # the UNet's sample size times the VAE's scale factor


def test_same_seed_same_pixels_and_new_seed_new_pixels(tiny_sd, sd_manager):
    first, again, other = (run(tiny_sd, sd_manager, ["a castle"], [s])[0] for s in (7, 7, 8))
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))


def test_an_image_is_the_same_alone_or_in_a_batch(tiny_sd, sd_manager):
    """Batched and lone runs may differ in the last float bits (other BLAS blocking): allow 1 level of 255."""
    prompts, seeds = ["a castle", "a cat", "a castle"], [3, 4, 5]
    batched = run(tiny_sd, sd_manager, prompts, seeds)
    one_by_one = run(tiny_sd, sd_manager, prompts, seeds, batch_size=1)
    for prompt, seed, together, single in zip(prompts, seeds, batched, one_by_one, strict=True):
        alone = run(tiny_sd, sd_manager, [prompt], [seed])[0]
        assert np.abs(pixels(together) - pixels(alone)).max() <= 1
        assert np.abs(pixels(together) - pixels(single)).max() <= 1
    assert not np.array_equal(pixels(batched[0]), pixels(batched[2]))  # same prompt, other seed


def test_negative_prompt_changes_the_image(tiny_sd, sd_manager):
    plain = run(tiny_sd, sd_manager, ["a castle"], [1])[0]
    negative = run(tiny_sd, sd_manager, ["a castle"], [1], negative_prompt="a cat")[0]
    assert not np.array_equal(pixels(plain), pixels(negative))


@pytest.mark.parametrize("as_path", [False, True])
def test_image_to_image_starts_from_the_init_image(tiny_sd, sd_manager, tmp_path, as_path):
    from PIL import Image

    gradient = np.linspace(0, 255, SIZE, dtype=np.uint8)
    init = Image.fromarray(np.stack([np.tile(gradient, (SIZE, 1))] * 3, axis=-1))
    init_ref = init
    if as_path:
        init_ref = str(tmp_path / "init.png")
        init.save(init_ref)
    text_only = run(tiny_sd, sd_manager, ["a castle"], [1])[0]
    light = run(tiny_sd, sd_manager, ["a castle"], [1], init_image=init_ref, strength=0.5)[0]
    heavy = run(tiny_sd, sd_manager, ["a castle"], [1], init_image=init_ref, strength=1.0)[0]
    assert light.data.size == heavy.data.size == (SIZE, SIZE)
    assert light.info["strength"] == 0.5
    assert not np.array_equal(pixels(light), pixels(text_only))
    assert not np.array_equal(pixels(light), pixels(heavy))
    again = run(tiny_sd, sd_manager, ["a castle"], [1], init_image=init_ref, strength=0.5)[0]
    assert np.array_equal(pixels(light), pixels(again))


def test_init_image_without_a_size_keeps_its_own(tiny_sd, sd_manager):
    from PIL import Image

    init = Image.new("RGB", (100, 72), (200, 120, 40))
    out = run(tiny_sd, sd_manager, ["a castle"], [1], init_image=init, width=None, height=None)[0]
    assert out.data.size == (96, 72)  # rounded down to multiples of 8


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs(tiny_sd, sd_manager, name):
    out = run(tiny_sd, sd_manager, ["a castle"], [1], scheduler=name)[0]
    assert out.info["scheduler"] == SCHEDULERS[name]
    assert out.data.size == (SIZE, SIZE)
    assert np.asarray(out.data).std() > 0  # a real, non-blank picture (no NaNs turned black)


def test_the_cached_pipeline_keeps_its_own_scheduler(tiny_sd, sd_manager):
    run(tiny_sd, sd_manager, ["a castle"], [1], scheduler="euler")
    assert run(tiny_sd, sd_manager, ["a castle"], [1])[0].info["scheduler"] == "PNDMScheduler"


@pytest.mark.parametrize(
    "given, message",
    [
        ({"width": 500}, r"width=500 must be a multiple of 8 \(try 496 or 504\)"),
        ({"height": 68}, r"height=68 must be a multiple of 8 \(try 64 or 72\)"),
        ({"width": 50}, "out of range"),
        ({"width": 33}, "out of range"),
        ({"steps": 0}, "out of range"),
        ({"scheduler": "plms"}, "not allowed"),
        ({"strength": 0}, "out of range"),
        ({"guidance": 31.0}, "out of range"),
        ({"init_image": "no/such/picture.png"}, "no such file"),
        ({"init_image": 3}, "must be of type str"),
        ({"steps": 2, "strength": 0.3, "init_image": __file__}, "leaves no denoising step"),
        ({"sampler": "ddim"}, "unknown parameter"),
        ({"fuse_qkv": "yes"}, r"fuse_qkv='yes' must be of type bool"),
        ({"channels_last": 1}, r"channels_last=1 must be of type bool"),
        ({"compile": "max-autotune"}, r"compile='max-autotune' must be of type bool"),
        ({"vae_tiling": "auto"}, r"vae_tiling='auto' must be of type bool"),
        ({"fast_loop": 0}, r"fast_loop=0 must be of type bool"),
    ],
)
def test_bad_parameters_fail_before_any_load(tiny_sd, given, message):
    manager = DeviceManager("cpu")
    with pytest.raises(ConfigError, match=message):
        run(tiny_sd, manager, ["a castle"], [1], **given)
    assert manager.stats()["loads"] == 0


def test_compile_without_a_cpu_compiler_fails_before_any_load(tiny_sd):
    from torch._inductor import config as inductor

    manager = DeviceManager("cpu")
    with inductor.patch({"cpp.cxx": ("no-such-c++",)}), pytest.raises(ConfigError, match=r"needs a C\+\+ compiler"):
        run(tiny_sd, manager, ["a castle"], [1], compile=True)
    assert manager.stats()["loads"] == 0


def test_a_directory_without_model_index_is_refused(tmp_path, tiny_gpt2):
    manager = DeviceManager("cpu")
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        DiffusionGenerator(str(tmp_path), manager)
    with pytest.raises(ModelLoadError, match="a transformers model"):
        DiffusionGenerator(tiny_gpt2, manager)
    assert manager.stats()["loads"] == 0


def test_an_unusable_single_file_fails_with_advice(tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "broken.safetensors"
    checkpoint.write_bytes(b"not a checkpoint")  # damaged: says so, rather than blaming the Hub (issue 14)
    with pytest.raises(ModelLoadError, match="not a readable .safetensors file"):
        DiffusionGenerator(str(checkpoint), DeviceManager("cpu"))
    import torch

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, tmp_path / "sd.safetensors")
    generator = DiffusionGenerator(str(tmp_path / "sd.safetensors"), DeviceManager("cpu"))  # readable, offline
    with pytest.raises(ModelLoadError, match="pass that diffusers directory instead"):
        generator.generate(["a castle"], [1], **DiffusionGenerator.check_params({"steps": 1}))
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")  # a bare pickle, not torch's zip format
    with pytest.raises(ModelLoadError, match="not a readable .ckpt checkpoint"):
        DiffusionGenerator(str(tmp_path / "old.ckpt"), DeviceManager("cpu"))
    other = tmp_path / "model.gguf"
    other.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="cannot be a Stable Diffusion model"):
        DiffusionGenerator(str(other), DeviceManager("cpu"))


@pytest.fixture
def sd_in_hub_cache(tiny_sd):
    """The tiny pipeline placed in the Hub cache under the default SD id, then taken out again."""
    import os
    import shutil
    from pathlib import Path

    from conftest import put_in_hub_cache

    from aigc.runtime.registry import DEFAULT_DIFFUSION_MODEL

    put_in_hub_cache(DEFAULT_DIFFUSION_MODEL, tiny_sd)
    yield DEFAULT_DIFFUSION_MODEL
    shutil.rmtree(Path(os.environ["HF_HUB_CACHE"]) / ("models--" + DEFAULT_DIFFUSION_MODEL.replace("/", "--")))


def test_with_sd_weights_cached_images_default_to_diffusion_through_the_hub_path(sd_in_hub_cache, sd_manager):
    import aigc

    asset = aigc.generate("image", "a castle at dusk", seed=3, steps=2, width=SIZE, height=SIZE, manager=sd_manager)[0]
    assert asset.backend == "diffusion" and asset.model == sd_in_hub_cache
    assert asset.data.size == (SIZE, SIZE) and asset.params["steps"] == 2


def test_without_sd_weights_the_default_model_error_says_how_to_get_them(sd_manager):
    import aigc

    with pytest.raises(aigc.ModelLoadError, match="hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        aigc.generate("image", "a castle", backend="diffusion", manager=sd_manager)


def test_png_metadata_regenerates_the_same_diffusion_image(tiny_sd, sd_manager, tmp_path):
    from PIL import Image

    import aigc

    asset = aigc.generate(
        "image",
        "a castle",
        backend="diffusion",
        model=tiny_sd,
        seed=11,
        steps=2,
        width=SIZE,
        height=SIZE,
        negative_prompt="fog",
        scheduler="euler",
        manager=sd_manager,
    )[0]
    path = asset.save(tmp_path / "castle.png", model_path=True)  # a record that finds this local model again
    with Image.open(path) as image:
        parameters = image.text["parameters"]
    assert parameters.startswith("a castle\nNegative prompt: fog\nSteps: 2, Sampler: euler, CFG scale: ")
    loaded = aigc.load(path)
    again = aigc.generate(
        "image",
        loaded.prompt,
        backend=loaded.backend,
        model=loaded.model,
        seed=loaded.seed,
        manager=sd_manager,
        **loaded.params,
    )[0]
    assert np.array_equal(pixels(again), pixels(asset))


def test_a_pil_init_image_is_recorded_as_a_description(tiny_sd, sd_manager):
    from PIL import Image

    import aigc

    asset = aigc.generate(
        "image",
        "a castle",
        backend="diffusion",
        model=tiny_sd,
        seed=1,
        steps=2,
        strength=0.5,
        init_image=Image.new("RGB", (SIZE, SIZE), "gray"),
        manager=sd_manager,
    )[0]
    assert asset.params["init_image"] == "<Image 64x64>"
    assert "Denoising strength: 0.5" in aigc.media.assets.a1111_parameters(asset)


def test_turbo_models_default_to_one_step_without_guidance(tiny_sd, sd_manager, tmp_path):
    import shutil

    turbo = shutil.copytree(tiny_sd, tmp_path / "tiny-sd-turbo")
    out = run(str(turbo), sd_manager, ["a castle"], [1], steps=None)[0]
    assert (out.info["steps"], out.info["guidance"]) == (1, 0.0)
    chosen = run(str(turbo), sd_manager, ["a castle"], [1], steps=3, guidance=2.0)[0]
    assert (chosen.info["steps"], chosen.info["guidance"]) == (3, 2.0)  # the user's values win


def test_half_precision_is_honoured_when_asked(tiny_sd):
    import torch

    manager = DeviceManager("cpu", dtype="bfloat16")
    out = run(tiny_sd, manager, ["a castle"], [1])[0]
    assert out.data.size == (SIZE, SIZE)
    with manager.use(manager.key("diffusion", tiny_sd), lambda: None) as pipe:
        assert pipe.unet.dtype == torch.bfloat16

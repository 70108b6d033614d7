"""The upscale backend: ESRGAN-family files in each layout people download (real forward passes on tiny random
networks, checked against plain functional forwards), tiling, the checks before any load, the prompt rule, saved
metadata, `aigc upscale`, and Stable Diffusion's x4 and latent upscalers with their seeds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from upscalers import (
    build_latent_x2,
    build_sd_x4,
    compact_forward,
    compact_state,
    old_names,
    rrdb_forward,
    rrdb_state,
    save,
)

import aigc
from aigc.media.assets import a1111_parameters
from aigc.runtime import registry
from aigc.runtime.devices import DeviceManager

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"
LAYOUTS = ["RRDBNet", "ESRGAN", "SRVGGNetCompact"]


def _picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A gradient with noise on it: edges and flat parts, so a wrong pixel shows."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
    return Image.fromarray(np.clip(ramp + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "photo.png"
    _picture(20, 16).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """One file per layout and wrapping: (state, upsamples, unshuffle) are rebuilt from the same seeds by the tests."""
    d = tmp_path_factory.mktemp("upscalers")
    return {
        "x4.pth": save(rrdb_state(), d / "RealESRGAN_x4plus.pth", wrap="params_ema"),
        "x4.safetensors": save(rrdb_state(), d / "x4.safetensors"),
        "x2.pth": save(rrdb_state(unshuffle=2), d / "RealESRGAN_x2plus.pth", wrap="params"),
        "x1.pth": save(rrdb_state(unshuffle=4), d / "1x-denoise.pth"),
        "x8.pth": save(rrdb_state(upsamples=3), d / "8x.pth"),
        "old-x4.pth": save(old_names(rrdb_state()), d / "4x-old.pth"),
        "compact-x4.pth": save(compact_state(), d / "realesr-general-x4v3.pth", wrap="params"),
        "compact-x2.safetensors": save(compact_state(scale=2), d / "compact-x2.safetensors"),
    }


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _reference(name: str, image: Image.Image) -> np.ndarray:
    """What the file's network makes of `image`, computed by the plain functional forward."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        if name.startswith("compact"):
            scale = 2 if "x2" in name else 4
            out = compact_forward(compact_state(scale=scale), x, scale)
        else:
            upsamples, unshuffle = (3, 1) if "x8" in name else (2, {"x2": 2, "x1": 4}.get(name[:2], 1))
            out = rrdb_forward(rrdb_state(upsamples, unshuffle), x, upsamples, unshuffle)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy().astype(np.int16)


def upscale(model: str, image, manager: DeviceManager | None = None, **knobs) -> aigc.Asset:
    manager = manager or DeviceManager("cpu")
    return aigc.generate("image", "", backend="upscale", model=model, init_image=image, manager=manager, **knobs)[0]


@pytest.mark.parametrize(
    "name, layout, factor",
    [
        ("x4.pth", "RRDBNet", 4),
        ("x4.safetensors", "RRDBNet", 4),
        ("x2.pth", "RRDBNet", 2),
        ("x1.pth", "RRDBNet", 1),
        ("x8.pth", "RRDBNet", 8),
        ("old-x4.pth", "ESRGAN", 4),
        ("compact-x4.pth", "SRVGGNetCompact", 4),
        ("compact-x2.safetensors", "SRVGGNetCompact", 2),
    ],
)
def test_each_layout_upscales_by_its_own_factor_as_the_plain_forward_does(files, picture, name, layout, factor):
    asset = upscale(files[name], str(picture))
    assert asset.data.size == (20 * factor, 16 * factor)
    assert asset.info["layout"] == layout and asset.info["model_scale"] == factor == asset.info["scale"]
    expected = _reference(name, Image.open(picture).convert("RGB"))
    assert np.abs(_pixels(asset.data) - expected).max() <= 1  # float rounding at most
    assert _pixels(asset.data).std() > 5  # not a flat image: the test could tell a wrong network


def test_odd_sizes_work_with_pixel_unshuffle_models(files):
    for name, factor in (("x2.pth", 2), ("x1.pth", 1)):
        asset = upscale(files[name], _picture(21, 13))
        assert asset.data.size == (21 * factor, 13 * factor)


def test_a_scale_below_the_models_factor_resizes_its_result_with_lanczos(files, picture):
    manager = DeviceManager("cpu")
    full = upscale(files["x4.pth"], str(picture), manager)
    half = upscale(files["x4.pth"], str(picture), manager, scale=2)
    assert half.data.size == (40, 32) and half.info["scale"] == 2 and half.info["model_scale"] == 4
    assert np.array_equal(_pixels(half.data), _pixels(full.data.resize((40, 32), Image.Resampling.LANCZOS)))
    odd = upscale(files["x4.pth"], str(picture), manager, scale=1.5)
    assert odd.data.size == (30, 24)


def test_a_scale_above_the_models_factor_runs_it_again_on_its_result(files, picture):
    asset = upscale(files["compact-x2.safetensors"], str(picture), scale=3)
    assert asset.data.size == (60, 48) and asset.info["passes"] == 2
    once = _reference("compact-x2", Image.open(picture).convert("RGB"))
    twice = _reference("compact-x2", Image.fromarray(once.astype(np.uint8)))
    resized = Image.fromarray(twice.astype(np.uint8)).resize((60, 48), Image.Resampling.LANCZOS)
    assert np.abs(_pixels(asset.data) - _pixels(resized)).max() <= 2


def test_tiles_match_the_whole_image(files):
    """The tiny RRDBNet sees ~34 input pixels around each output pixel (32 convolutions at the input's size): with
    that much overlap the tiles give the untiled image. Measured on this 48x40 image with 16 px tiles, max | mean
    difference in levels of 255: overlap 0: 40 | 1.7; 4: 1 | 0.008; 8: 1 | 0.0001; 16 (default): 1 | 0.0; 32: 0."""
    image = _picture(48, 40, seed=1)
    manager = DeviceManager("cpu")
    whole = _pixels(upscale(files["x4.pth"], image, manager, tile=0).data)
    covered = upscale(files["x4.pth"], image, manager, tile=16, tile_overlap=36)
    assert covered.info["tiles"] == 9
    assert np.abs(_pixels(covered.data) - whole).max() <= 1
    assert np.abs(_pixels(upscale(files["x4.pth"], image, manager, tile=16).data) - whole).max() <= 1
    seams = np.abs(_pixels(upscale(files["x4.pth"], image, manager, tile=16, tile_overlap=0).data) - whole)
    assert seams.max() > 10  # without context the tile borders show: the comparison above can fail
    compact = upscale(files["compact-x4.pth"], image, manager, tile=0).data
    compact_tiled = upscale(files["compact-x4.pth"], image, manager, tile=8, tile_overlap=8).data
    assert np.abs(_pixels(compact) - _pixels(compact_tiled)).max() <= 1  # receptive field 4: fully covered


def test_each_file_is_loaded_once_through_the_device_managers_cache(files, picture):
    manager = DeviceManager("cpu")
    first = upscale(files["x4.pth"], str(picture), manager)
    second = upscale(files["x4.pth"], str(picture), manager, scale=2)
    stats = manager.stats()
    assert stats["loads"] == 1 and stats["hits"] >= 1 and stats["models"][0]["backend"] == "upscale"
    assert first.data.size != second.data.size


def test_a_file_of_no_known_layout_is_one_line_listing_the_layouts(tmp_path, picture):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(4, 4)}, tmp_path / "classifier.safetensors")
    torch.save({"fc.weight": torch.zeros(4, 4)}, tmp_path / "classifier.pth")
    manager = DeviceManager("cpu")
    for name in ("classifier.safetensors", "classifier.pth"):
        with pytest.raises(aigc.ModelLoadError) as caught:
            upscale(str(tmp_path / name), str(picture), manager)
        message = str(caught.value)
        assert "\n" not in message and all(layout in message for layout in LAYOUTS), message
    assert manager.stats()["loads"] == 0


def test_damaged_files_are_one_line_errors_before_any_load(files, tmp_path, picture):
    for name in ("x4.pth", "x4.safetensors"):
        data = Path(files[name]).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(aigc.ModelLoadError, match=r"not a readable") as caught:
            upscale(str(cut), str(picture))
        assert "\n" not in str(caught.value)
    (tmp_path / "noise.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(aigc.ModelLoadError, match="not a readable torch file"):
        upscale(str(tmp_path / "noise.pth"), str(picture))
    torch.save({"params": {"w": torch.ones(1)}, "rng": np.random.default_rng(0)}, tmp_path / "code.pth")
    with pytest.raises(aigc.ModelLoadError, match="a pickle that needs code to load"):
        upscale(str(tmp_path / "code.pth"), str(picture))


def test_requests_are_refused_before_any_model_loads(files, picture):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match=r"init_image is required: pass the image to upscale"):
        aigc.generate("image", "", backend="upscale", model=files["x4.pth"], manager=manager)
    with aigc.limits.set(megapixels=1):
        big = _picture(600, 500)
        with pytest.raises(aigc.ConfigError, match=r"1 image\(s\) of 2400x2000 pixels, in megapixels is 5"):
            upscale(files["x4.pth"], big, manager)
    with pytest.raises(aigc.ConfigError, match=r"steps= does not apply to this model \(RRDBNet"):
        upscale(files["x4.pth"], str(picture), manager, steps=20)
    with pytest.raises(aigc.ConfigError, match=r"scale=9.0 is out of range"):
        upscale(files["x4.pth"], str(picture), manager, scale=9)
    with pytest.raises(aigc.ConfigError, match="is not a readable image"):
        upscale(files["x4.pth"], __file__, manager)
    assert manager.stats()["loads"] == 0


def test_the_megapixels_limit_counts_the_models_own_result_before_it_is_resized_down(files):
    with aigc.limits.set(megapixels=2), pytest.raises(aigc.ConfigError, match=r"2400x2000 pixels"):
        upscale(files["x4.pth"], _picture(600, 500), scale=1.5)  # 900x750 would fit; the x4 result first does not


def test_an_empty_prompt_is_for_backends_that_take_none():
    image = _picture(8, 8)
    with pytest.raises(aigc.ConfigError, match="prompt='' is empty; say what to generate"):
        aigc.generate("image", "", backend="diffusion", init_image=image)
    with pytest.raises(aigc.ConfigError, match="prompt='' is empty"):
        aigc.generate("image", "", backend="gan")
    with pytest.raises(aigc.ConfigError, match=r"prompt\[1\]='  ' is empty"):
        aigc.generate("text", ["ok", "  "])
    assert registry.get("image", "upscale").load().takes_prompt is False
    assert all(spec.load().takes_prompt for spec in registry.BUILTINS if spec.name != "upscale")


def test_the_prompt_is_ignored_by_esrgan_and_the_output_is_deterministic(files, picture):
    manager = DeviceManager("cpu")
    assets = aigc.generate(
        "image",
        ["", "a castle"],
        backend="upscale",
        model=files["compact-x4.pth"],
        n=2,
        init_image=str(picture),
        manager=manager,
    )
    assert len(assets) == 4 and all(np.array_equal(_pixels(a.data), _pixels(assets[0].data)) for a in assets)
    assert assets[1].data is not assets[0].data  # each asset owns its image


def test_a_saved_png_reads_back_with_its_record_and_a1111_labels(files, picture, tmp_path):
    asset = upscale(files["x4.pth"], str(picture), scale=2, tile=64)
    loaded = aigc.load(asset.save(tmp_path / "big.png"))
    assert np.array_equal(_pixels(loaded.data), _pixels(asset.data))
    assert loaded.backend == "upscale" and loaded.model == "RealESRGAN_x4plus"
    assert loaded.params["scale"] == 2 and loaded.params["tile"] == 64 and loaded.params["tile_overlap"] == 16
    assert loaded.info["layout"] == "RRDBNet" and loaded.info["model_scale"] == 4
    text = a1111_parameters(loaded)
    assert "Postprocess upscale by: 2" in text and "Postprocess upscaler: RealESRGAN_x4plus" in text
    default = upscale(files["x4.pth"], str(picture))
    assert "Postprocess upscale by: 4," in a1111_parameters(default)  # the model's own factor, when left out


def test_a_model_file_picks_the_upscale_backend_by_itself(files, tiny_dcgan):
    for name in ("x4.pth", "x4.safetensors", "old-x4.pth", "compact-x4.pth"):
        assert registry.get("image", model=files[name]).name == "upscale", name
    assert registry.get("image", model=tiny_dcgan).name == "gan"  # a DCGAN .pth stays the GAN's
    asset = aigc.generate("image", "", model=files["compact-x4.pth"], init_image=_picture(8, 8))[0]
    assert asset.backend == "upscale" and asset.data.size == (32, 32)


def test_aigc_upscale_saves_beside_the_input_or_in_out_and_never_overwrites(files, picture, tmp_path):
    from aigc.cli.main import cli

    source, other = tmp_path / "photo.png", tmp_path / "photo-x4.png"  # an input named like photo.png's result
    shutil.copy(picture, source)
    _picture(10, 8).save(other)
    runner = CliRunner()
    done = runner.invoke(cli, ["upscale", str(source), "--model", files["x4.pth"], "--scale", "2", "--tile", "8"])
    assert done.exit_code == 0, done.output
    assert done.stdout == f"{tmp_path / 'photo-x2.png'}  (40x32, x2)\n"
    saved = aigc.load(tmp_path / "photo-x2.png")
    assert saved.params["tile"] == 8 and saved.params["scale"] == 2 and saved.data.size == (40, 32)
    again = runner.invoke(cli, ["upscale", str(source), str(other), "--model", files["x4.pth"]])
    assert again.exit_code == 0, again.output
    names = [Path(line.split()[0]).name for line in again.stdout.splitlines()]
    assert names == ["photo-x4-1.png", "photo-x4-x4.png"]  # photo-x4.png was an input: left alone
    out = tmp_path / "big"
    as_json = runner.invoke(cli, ["upscale", str(source), "-m", files["x1.pth"], "-p", "tile=4", "--json", "-o", out])
    record = json.loads(as_json.stdout)
    assert record["params"]["tile"] == 4 and record["file"] == str(out / "photo-x1.png")
    assert source.read_bytes() == picture.read_bytes() and Image.open(other).size == (10, 8)


def test_aigc_upscale_errors_are_one_line(files, tmp_path):
    done = subprocess.run(
        [AIGC, "upscale", str(tmp_path / "missing.png"), "--model", files["x4.pth"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "missing.png: no such file; pass the image files to upscale" in done.stderr
    assert "Examples:" in subprocess.run([AIGC, "upscale", "--help"], capture_output=True, text=True).stdout


# --- Stable Diffusion's upscalers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_x4(tmp_path_factory) -> str:
    from conftest import _tiny_clip_tokenizer

    return build_sd_x4(tmp_path_factory.mktemp("sd-x4") / "stable-diffusion-x4-upscaler", _tiny_clip_tokenizer())


@pytest.fixture(scope="module")
def sd_latent(tmp_path_factory) -> str:
    from conftest import _tiny_clip_tokenizer

    return build_latent_x2(tmp_path_factory.mktemp("sd-latent") / "sd-x2-latent-upscaler", _tiny_clip_tokenizer())


def test_the_sd_x4_upscaler_gives_each_seed_its_own_image_alone_or_in_a_batch(sd_x4):
    manager = DeviceManager("cpu")
    image = _picture(16, 12)

    def run(seeds, prompt="", **knobs):
        return aigc.generate(
            "image",
            prompt,
            backend="upscale",
            model=sd_x4,
            init_image=image,
            seed=seeds,
            n=len(seeds),
            steps=2,
            manager=manager,
            **knobs,
        )

    batch = run([1, 2])
    alone = run([2])[0]
    assert [a.data.size for a in batch] == [(64, 48)] * 2
    assert np.abs(_pixels(batch[1].data) - _pixels(alone.data)).max() <= 1
    assert np.abs(_pixels(batch[0].data) - _pixels(batch[1].data)).mean() > 10  # another seed, another image
    assert batch[0].info | {"noise_level": 20, "steps": 2, "guidance": 9.0, "model_scale": 4} == batch[0].info
    guided = run([2], "a red door", noise_level=50, negative_prompt="blurry", scale=2)[0]
    assert guided.data.size == (32, 24) and guided.params["noise_level"] == 50
    assert manager.stats()["loads"] == 1
    with pytest.raises(aigc.ConfigError, match=r"scale=8 is more than this StableDiffusionUpscalePipeline's x4"):
        run([1], scale=8)


def test_the_latent_upscaler_doubles_with_its_own_defaults(sd_latent):
    manager = DeviceManager("cpu")
    image = _picture(24, 16)
    assets = aigc.generate(
        "image", "", backend="upscale", model=sd_latent, init_image=image, seed=[3, 4], n=2, steps=2, manager=manager
    )
    assert [a.data.size for a in assets] == [(48, 32)] * 2 and assets[0].info["guidance"] == 0.0
    again = aigc.generate(
        "image", "", backend="upscale", model=sd_latent, init_image=image, seed=4, steps=2, manager=manager
    )[0]
    assert np.abs(_pixels(again.data) - _pixels(assets[1].data)).max() <= 1
    with pytest.raises(aigc.ConfigError, match="only the SD x4 upscaler takes it"):
        aigc.generate("image", "", backend="upscale", model=sd_latent, init_image=image, noise_level=30)


def test_a_diffusers_directory_that_is_no_upscaler_is_refused(tiny_sd):
    with pytest.raises(
        aigc.ModelLoadError, match=r"is a StableDiffusionPipeline, not an upscaler.*backend='diffusion'"
    ):
        upscale(tiny_sd, _picture(8, 8))


def test_a_diffusers_upscaler_directory_picks_the_upscale_backend_by_itself(sd_x4, sd_latent):
    assert registry.get("image", model=sd_x4).name == "upscale"
    assert registry.get("image", model=sd_latent).name == "upscale"

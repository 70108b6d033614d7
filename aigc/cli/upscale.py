"""`aigc upscale`: make image files bigger with an upscaling model, saved with their metadata beside the inputs or
in --out. Kept apart from main.py; everything heavy is imported inside the command, so `aigc --help` stays light."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from .common import own_progress_only, pairs, progress

UPSCALE_EXAMPLES = """
\b
Examples:
  aigc upscale photo.png --model RealESRGAN_x4plus.pth        # writes photo-x4.png beside photo.png
  aigc upscale shots/*.jpg --model 4x-UltraSharp.safetensors --scale 2 --out big/
  aigc upscale poster.png --model realesr-general-x4v3.pth --tile 128   # smaller tiles: less memory
  aigc upscale cat.png --model ./stable-diffusion-x4-upscaler --prompt "a white cat" --seed 1 -p steps=20
"""


@click.command(epilog=UPSCALE_EXAMPLES)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "-m",
    required=True,
    help="The upscaler: an ESRGAN / Real-ESRGAN .pth or .safetensors file, or a diffusers directory (or Hub id) "
    "of Stable Diffusion's x4 or latent upscaler.",
)
@click.option("--scale", type=float, help="Output size as a multiple of the input's. Default: the model's own (x4...).")
@click.option("--tile", type=int, help="Input pixels per tile side (default 256; 0 = the whole image at once).")
@click.option("--tile-overlap", type=int, help="Input pixels of context around each tile (default 16).")
@click.option("--prompt", default="", help="Diffusers upscalers: what the image shows (optional; ESRGAN ignores it).")
@click.option("--seed", "-s", type=int, help="Diffusers upscalers: the seed (default: random). ESRGAN needs none.")
@click.option("--param", "-p", "extra", multiple=True, metavar="KEY=VALUE", help="Another knob (steps=20...).")
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), help="Folder for the results. Default: beside each input."
)
@click.option("--format", "-f", "fmt", help="png (default), webp or jpeg.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per result.")
@click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps. Also $AIGC_DEVICE.")
@click.option("--dtype", help="auto (default), float32, float16 or bfloat16. Also $AIGC_DTYPE.")
def upscale(
    files: tuple[Path, ...],
    model: str,
    scale: float | None,
    tile: int | None,
    tile_overlap: int | None,
    prompt: str,
    seed: int | None,
    extra: tuple[str, ...],
    out: Path | None,
    fmt: str | None,
    as_json: bool,
    device: str | None,
    dtype: str | None,
) -> None:
    """Upscale image FILES with an upscaling model: each result is saved as NAME-x<scale>.png (with the model,
    scale and knobs inside) beside its input, or in --out. An input is never overwritten.

    ESRGAN-family models (RRDBNet and SRVGGNetCompact, in Real-ESRGAN's or the original ESRGAN's key names) run
    tile by tile, so big images fit in memory; see the Images page of the docs for the knobs.
    """
    own_progress_only()
    from .. import api
    from ..media import formats
    from ..progress import report, reporting
    from ..storage import unique_path, writable_dir

    missing = [path for path in files if not path.is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: no such file; pass the image files to upscale (e.g. photo.png).")
    file_format = formats.by_name(fmt) if fmt is not None else formats.default("image")
    if file_format.kind != "image":
        raise click.BadParameter(f"{fmt!r} is not an image format; use {', '.join(formats.suffixes('image'))}.")
    if out is not None:
        writable_dir(out)  # a read-only or misnamed --out fails now, not after the work is done
    params = _knobs({"scale": scale, "tile": tile, "tile_overlap": tile_overlap}, pairs(extra, "--param"))
    manager = None
    if device or dtype:
        from ..runtime import devices

        manager = devices.configure(device, dtype)
    with progress() as shown, reporting(shown):
        for index, path in enumerate(files):
            report("upscale", index, len(files), path.name)
            asset = api.generate(
                "image",
                prompt,
                backend="upscale",
                model=model,
                seed=seed,
                init_image=str(path),
                manager=manager,
                **params,
            )[0]
            factor = f"{asset.info['scale']:g}"
            saved = asset.save(unique_path(out or path.parent, f"{path.stem}-x{factor}", file_format.suffix))
            report("upscale", index + 1, len(files), path.name)
            _show(asset, saved, as_json)


def _knobs(options: dict[str, Any], pairs: dict[str, str]) -> dict[str, Any]:
    """The upscale backend's knob values from the options and -p pairs, read as its Params say."""
    from ..runtime import registry

    given = {name: value for name, value in options.items() if value is not None}
    both = sorted(set(given) & set(pairs))
    if both:
        raise click.BadParameter(f"{both[0]} is given as an option and as -p; give it once", param_hint="--param")
    if "init_image" in pairs:
        raise click.BadParameter("init_image is each of FILES; drop it", param_hint="--param")
    return registry.get("image", "upscale").load().parse_knobs({**given, **pairs})


def _show(asset: Any, saved: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**asset.record(), "file": str(saved)}, ensure_ascii=False))
    else:
        click.echo(f"{saved}  ({asset.info['width']}x{asset.info['height']}, x{asset.info['scale']:g})")

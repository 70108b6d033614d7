"""Image upscaling: the ESRGAN family (RRDBNet, SRVGGNetCompact) from a downloaded .pth/.safetensors file, and Stable
Diffusion's x4 and latent upscalers from a diffusers directory. The image is `init_image`; no prompt is needed."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, ModelLoadError
from ...runtime import models
from ..base import Generator, Output, Param
from .sd_upscale import DEFAULTS, LATENT, NOISE_LEVEL, SCALES, X4

if TYPE_CHECKING:
    from .esrgan import Layout, Upscaler

MAX_PASSES = 3  # a model asked for more than its factor runs again on its own result (x2 x2 x2 = 8), at most this often
DIFFUSERS_KNOBS = {  # the knobs only diffusers upscalers take; an ESRGAN-family model refuses them, never ignores them
    X4: ("steps", "guidance", "negative_prompt", "batch_size", "noise_level"),
    LATENT: ("steps", "guidance", "negative_prompt", "batch_size"),
}


class UpscaleGenerator(Generator):
    """Upscales `init_image` with the model given: an ESRGAN-family weights file (deterministic; the prompt is
    ignored) or a diffusers upscaler directory (seeded; the prompt guides it and may be empty).

    ESRGAN-family models run tile by tile (`tile`, `tile_overlap`) so memory stays bounded; a `scale` below the
    model's factor resizes its result down with Lanczos, above it runs the model again on its result.
    """

    kind = "image"
    family = "upscale"
    takes_prompt = False
    params = {
        "init_image": Param(None, "the image to upscale (a path or a PIL image); required", "image"),
        "scale": Param(
            None,
            "output size as a multiple of the input's (default: the model's own factor); less resizes the model's "
            "result down (Lanczos), more runs an ESRGAN-family model again on its result",
            "float",
            0.0,
            8.0,
            min_exclusive=True,
            a1111="Postprocess upscale by",
        ),
        "tile": Param(
            256,
            "ESRGAN family: input pixels per tile side, so device memory stays bounded on big images; 0 = the whole "
            "image at once",
            "int",
            0,
            8192,
        ),
        "tile_overlap": Param(
            16,
            "ESRGAN family: input pixels of context around each tile, cropped off afterwards (more = closer to the "
            "untiled result, slower)",
            "int",
            0,
            512,
        ),
        "steps": Param(
            None,
            "diffusers upscalers: denoising steps (default 75 for SD x4, 20 for the latent one)",
            "int",
            1,
            500,
            a1111="Steps",
        ),
        "guidance": Param(
            None,
            "diffusers upscalers: classifier-free guidance scale (default 9 for SD x4, 0 for the latent one)",
            "float",
            0.0,
            30.0,
            a1111="CFG scale",
        ),
        "noise_level": Param(
            None,
            f"SD x4 upscaler: noise added to the input before denoising (default {NOISE_LEVEL}); more invents "
            "more detail",
            "int",
            0,
            350,
        ),
        "negative_prompt": Param(
            None, "diffusers upscalers: what the result should not show", "str", a1111="Negative prompt"
        ),
        "batch_size": Param(
            None,
            "diffusers upscalers: images denoised together (default: all); halves itself on out-of-memory",
            "int",
            1,
            record=False,
        ),
    }

    # --- the model -----------------------------------------------------------------------------------------------
    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        path = source.path
        if path is not None and path.is_file():
            from .esrgan import FILES, LayoutError

            if source.suffix not in FILES:
                return (
                    f"a {source.suffix or 'extensionless'} file is not an upscaler's weights; pass an ESRGAN-family "
                    f"{'/'.join(FILES)} file or a diffusers upscaler directory."
                )
            try:
                layout_of(path)
            except LayoutError as error:
                return f"{error}."
            return None
        index = source.json("model_index.json")
        name = (index or {}).get("_class_name")
        if name in SCALES:
            return None
        where = path if path is not None else source.ref
        if index is None:
            return (
                f"{where} has no model_index.json, so it is no diffusers upscaler; pass an ESRGAN-family weights file "
                f"(.pth/.safetensors) or a {X4} / {LATENT} directory."
            )
        return f"{where} is a {name}, not an upscaler ({X4} or {LATENT}); for text-to-image use backend='diffusion'."

    @functools.cached_property
    def pipeline(self) -> str | None:
        """The diffusers upscaler's class name (model_index.json), or None for an ESRGAN-family weights file."""
        path = self.source.path
        if path is not None and path.is_file():
            return None
        return (self.source.json("model_index.json") or {}).get("_class_name")

    def layout(self) -> Layout:
        """What the weights file holds, from its header (cached per file version)."""
        from .esrgan import LayoutError

        try:
            return layout_of(self.source.file)
        except LayoutError as error:
            raise ModelLoadError(f"model={self.model!r}: {error}.") from None

    def native_scale(self) -> int:
        """The factor the model upscales by, read without loading it."""
        return SCALES[self.pipeline] if self.pipeline else self.layout().scale

    # --- the checks ------------------------------------------------------------------------------------------------
    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """A diffusers upscaler's steps, guidance and noise level when left to their defaults; ESRGAN has none."""
        pipeline = self.pipeline
        if pipeline is None:
            return params
        steps, guidance = DEFAULTS[pipeline]
        resolved = {
            "steps": params["steps"] if params["steps"] is not None else steps,
            "guidance": params["guidance"] if params["guidance"] is not None else guidance,
        }
        if pipeline == X4 and params["noise_level"] is None:
            resolved["noise_level"] = NOISE_LEVEL
        return {**params, **resolved}

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        """The input image is there and readable, the knobs fit this model, and the result fits the megapixels limit."""
        if params["init_image"] is None:
            raise ConfigError(
                "init_image is required: pass the image to upscale (init_image='photo.png' or a PIL image).",
                field="init_image",
            )
        self._refuse_foreign_knobs(params)
        native = self.native_scale()
        scale = params["scale"] or native
        if self.pipeline is not None and scale > native:
            raise ConfigError(
                f"scale={scale:g} is more than this {self.pipeline}'s x{native}, and a diffusers upscaler runs once; "
                f"ask for at most {native}.",
                field="scale",
            )
        from .pictures import open_image

        width, height = open_image(params["init_image"]).size
        self.check_pixels(len(prompts), *target_size(width, height, scale))
        largest = native ** passes(native, scale)
        if largest > scale:  # the model's own result before it is resized down
            self.check_pixels(1, width * largest, height * largest)

    def _refuse_foreign_knobs(self, params: dict[str, Any]) -> None:
        own = DIFFUSERS_KNOBS.get(self.pipeline or "", ())
        for name in DIFFUSERS_KNOBS[X4]:
            if params[name] is not None and name not in own:
                what = self.pipeline or f"{self.layout().name}, an ESRGAN-family network"
                raise ConfigError(
                    f"{name}= does not apply to this model ({what}); "
                    f"{'only the SD x4 upscaler takes it' if name == 'noise_level' else 'diffusers upscalers take it'}"
                    "; drop it.",
                    field=name,
                )

    @classmethod
    def a1111(cls, params: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        settings = super().a1111(params, info)
        if info.get("upscaler"):
            settings["Postprocess upscaler"] = info["upscaler"]
        return settings

    # --- the work --------------------------------------------------------------------------------------------------
    def load(self) -> Any:
        """The network (or diffusers pipeline) on the CPU in this generator's dtype; the manager moves it."""
        if self.pipeline is not None:
            from . import sd_upscale

            target = self.source.pretrained_target
            return sd_upscale.load(target, self.dtype)
        from .esrgan import build

        return build(self.source.file).to(self.dtype)

    def preprocess(self, model: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        """(prompt, seed, image) per output; the image is read once for all of them."""
        from .pictures import open_image

        image = open_image(params["init_image"])
        return [(prompt, seed, image) for prompt, seed in zip(prompts, seeds, strict=True)]

    def forward(self, model: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        if self.pipeline is not None:
            return self._diffusers(model, items, params)
        return self._esrgan(model, items, params)

    def _esrgan(self, net: Upscaler, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        """One deterministic result, shared by every output of the chunk (the prompt and seed do not change it)."""
        image = items[0][2]
        native = net.layout.scale
        scale = params["scale"] or native
        runs = passes(native, scale)
        result, tiles = image, 0
        for done in range(runs):
            result, count = self._one_pass(net, result, params, f"pass {done + 1} of {runs}" if runs > 1 else "")
            tiles += count
        result = _resized(result, target_size(image.width, image.height, scale))
        info = {
            "width": result.width,
            "height": result.height,
            "scale": scale,
            "model_scale": native,
            "layout": net.layout.name,
            "upscaler": models.public_name(self.model),
            "passes": runs,
            "tiles": tiles,
        }
        return [Output(result if i == 0 else result.copy(), dict(info)) for i in range(len(items))]

    def _one_pass(self, net: Upscaler, image: Any, params: dict[str, Any], detail: str) -> tuple[Any, int]:
        """The network once over the whole image, tile by tile: (the upscaled PIL image, how many tiles)."""
        import numpy as np
        import torch
        from PIL import Image

        from . import tiles

        dtype = next(net.parameters()).dtype
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        pixels = pixels.to(self.manager.device).to(dtype) / 255
        count = tiles.count(image.height, image.width, params["tile"], net.align)
        on_tile = (lambda step, total: self.report("tiles", step, total, detail)) if self.reporting else None
        with torch.inference_mode():
            out = tiles.upscale(
                net,
                pixels,
                net.layout.scale,
                tile=params["tile"],
                overlap=params["tile_overlap"],
                align=net.align,
                on_tile=on_tile,
            )
        return Image.fromarray(out[0].numpy()), count

    def _diffusers(self, pipe: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        import torch

        from . import sd_upscale

        image = items[0][2]
        native = SCALES[type(pipe).__name__]
        scale = params["scale"] or native
        generators = [torch.Generator(device=self.manager.device).manual_seed(seed) for _, seed, _ in items]
        on_step = (lambda step, total: self.report("denoise", step, total)) if self.reporting else None
        with torch.inference_mode():
            images = sd_upscale.run(pipe, [prompt for prompt, _, _ in items], generators, image, params, on_step)
        size = target_size(image.width, image.height, scale)
        own = {name: params[name] for name in ("steps", "guidance", "noise_level") if params[name] is not None}
        info = {"scale": scale, "model_scale": native, "layout": type(pipe).__name__, **own}
        info["upscaler"] = models.public_name(self.model)
        return [Output(_resized(im, size), {"width": size[0], "height": size[1], **info}) for im in images]


@functools.lru_cache(maxsize=32)
def _layout_of(path: str, version: tuple[int, int]) -> Layout:
    from .esrgan import detect, read_shapes

    return detect(read_shapes(Path(path)))


def layout_of(path: Path) -> Layout:
    """A weights file's layout from its header (esrgan.LayoutError if none), read once per version of the file."""
    stat = path.stat()
    return _layout_of(str(path.resolve()), (stat.st_mtime_ns, stat.st_size))


def passes(native: int, scale: float) -> int:
    """How often the model runs to reach `scale`: once, or again on its own result while that is still too small."""
    runs = 1
    while native > 1 and native**runs < scale and runs < MAX_PASSES:
        runs += 1
    return runs


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(image: Any, size: tuple[int, int]) -> Any:
    from PIL import Image

    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)

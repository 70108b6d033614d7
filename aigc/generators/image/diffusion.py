"""Image generation with Stable Diffusion through diffusers: text-to-image, and image-to-image from an init image.

Every image gets its own seeded torch.Generator, so an image with seed s is the same alone or in a batch.
The loaded pipeline is cached and shared, so each call builds a light pipeline view over its modules with
its own scheduler instance: schedulers keep per-run state and must not be shared between calls or threads.
SD 1.x/2.x/Turbo run aigc's own denoising loop (denoise.py); other pipelines (SDXL) the stock pipeline call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ... import progress
from ...errors import ConfigError, ModelLoadError
from ...runtime import models
from ..base import Generator, Nudge, Output, Param

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
}
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
TILE_ABOVE = 1024  # pixels: a wider or higher image is decoded in VAE tiles (memory); smaller ones never (seams)
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_SD_KEYS = ("model.diffusion_model.", "conditioner.", "cond_stage_model.")  # keys of an original SD checkpoint
# switches that change the cached modules: applied once at load time, and part of the cache key
MODULE_SWITCHES = ("fuse_qkv", "channels_last", "compile")


class DiffusionGenerator(Generator):
    """Stable Diffusion (1.x, 2.x, XL) from a Hub id, a diffusers directory or a single .safetensors/.ckpt file.

    `steps` and `guidance` default to 30 and 7.5, except for SD-Turbo style models (the model reference
    contains "turbo"), which are distilled for one step without classifier-free guidance: there they
    default to 1 step (enough steps for one denoising step at the given `strength` with an init image)
    and guidance 0. The values actually used are recorded in the Asset's params and each Output's info.

    The safety checker is off unless `safety_checker=True`: it is a user's choice, and it costs a second
    CLIP model in memory. With it on, flagged images come back black with info["nsfw"] = True.

    Speed: StableDiffusionPipeline / StableDiffusionImg2ImgPipeline models (SD 1.x, 2.x, SD-Turbo) run aigc's
    own loop (`fast_loop`, see denoise.py); any other pipeline type (SDXL, LCM-distilled UNets) keeps the stock
    diffusers pipeline call, which the module switches (`fuse_qkv`, `channels_last`, `compile`) still speed up.
    The same seed gives the stock pipeline's image within float rounding either way. info["fast"] lists
    the fast paths a call used.
    """

    kind = "image"
    family = "diffusion"
    limits = {"megapixels": 64}  # denoising holds latents and activations per image: e.g. 16 images of 2048 px
    params = {
        "steps": Param(
            None,
            f"denoising steps (default {DEFAULT_STEPS}; 1 for SD-Turbo models)",
            "int",
            1,
            500,
            nudge=Nudge(novelty=0, relevance=0, quality=10, low=1, high=100),
            a1111="Steps",
        ),
        "scheduler": Param(
            None, "sampler (default: the model's own)", "str", choices=tuple(SCHEDULERS), a1111="Sampler"
        ),
        "guidance": Param(
            None,
            f"classifier-free guidance scale (default {DEFAULT_GUIDANCE}; 0 for SD-Turbo); "
            "<= 1 turns guidance and the negative prompt off",
            "float",
            0.0,
            30.0,
            nudge=Nudge(novelty=-1.0, relevance=1.5, quality=0.0, low=1.0, high=15.0),
            a1111="CFG scale",
        ),
        "negative_prompt": Param(None, "what the image should not show", "str", a1111="Negative prompt"),
        "width": Param(
            None, "image width in pixels (default: the model's native size)", "int", 64, 2048, multiple_of=8
        ),
        "height": Param(
            None, "image height in pixels (default: the model's native size)", "int", 64, 2048, multiple_of=8
        ),
        "init_image": Param(None, "start from this image (a path or a PIL image): image-to-image", "image"),
        "strength": Param(
            0.8,
            "with init_image: how much of it to repaint (1 ignores it entirely)",
            "float",
            0.0,
            1.0,
            min_exclusive=True,
            a1111="Denoising strength",
        ),
        "safety_checker": Param(False, "run the model's NSFW safety checker (blacks out flagged images)", "bool"),
        "batch_size": Param(
            None, "images denoised together (default: all); halves itself on out-of-memory", "int", 1, record=False
        ),
        # speed knobs: they change pixels by float rounding at most (vae_tiling excepted), so are not recorded
        "fast_loop": Param(
            True,
            "aigc's denoising loop for SD 1.x/2.x/Turbo (each distinct prompt encoded once, one "
            "UNet call per guided step, no device reads inside the loop); False = the stock "
            "diffusers pipeline call. Other pipelines (SDXL) always use the stock call",
            "bool",
            record=False,
        ),
        "fuse_qkv": Param(
            True,
            "fuse each attention's q/k/v projections (UNet and VAE) into one matmul; applied at "
            "load time, so False loads a separate, unfused copy",
            "bool",
            record=False,
        ),
        "channels_last": Param(
            None,
            "UNet and VAE weights in channels-last memory format, applied at load time like "
            "fuse_qkv. Default: on with CUDA (cuDNN's NHWC convolutions), off on the CPU "
            "(measured ~10% slower there)",
            "bool",
            record=False,
        ),
        "compile": Param(
            False,
            "torch.compile the UNet's repeated transformer blocks (regional compilation: the first "
            "call compiles for seconds, not minutes; later calls run faster). On the CPU it needs "
            "a C++ compiler",
            "bool",
            record=False,
        ),
        "vae_tiling": Param(
            None,
            "decode (and encode) with the VAE in overlapping tiles: less memory, slightly "
            f"different pixels at tile seams. Default: only above {TILE_ABOVE} px wide or high. "
            "aigc's loop only; the stock fallback never tiles",
            "bool",
        ),
    }

    @classmethod
    def check_knobs(cls, knobs: dict[str, Any]) -> None:
        steps, strength = knobs["steps"], knobs["strength"]
        if knobs["init_image"] is not None and steps is not None and int(steps * strength) < 1:
            raise ConfigError(
                f"steps={steps} with strength={strength} leaves no denoising step (steps x strength < 1); "
                f"raise steps to {math.ceil(1 / strength)} or raise strength.",
                field="steps",
            )

    @classmethod
    def a1111(cls, params: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        settings = super().a1111(params, info)
        if params.get("init_image") is None:
            settings.pop("Denoising strength", None)  # strength only means something for image-to-image
        return settings

    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        path = source.path
        if path is not None and path.is_file():
            if source.suffix not in _SINGLE_FILE_SUFFIXES:
                return (
                    f"a {path.suffix or 'extensionless'} file cannot be a Stable Diffusion model; pass a "
                    ".safetensors/.ckpt checkpoint or a diffusers directory (with model_index.json)."
                )
            return _single_file_problem(source)
        if source.json("model_index.json") is not None:
            return None
        if path is None and source.json("config.json") is None:
            return None  # a Hub id not cached yet whose files cannot be read from here: from_pretrained downloads it
        has_config = (path / "config.json").exists() if path is not None else True
        found = "a transformers model (config.json)" if has_config else "no model_index.json"
        where = path if path is not None else source.ref
        return (
            f"{where} holds {found}, so it is not a diffusers pipeline directory; pass a directory saved with "
            "pipeline.save_pretrained(dir), a Hub id like 'stable-diffusion-v1-5/stable-diffusion-v1-5', or a "
            "single .safetensors checkpoint."
        )

    @property
    def is_turbo(self) -> bool:
        return "turbo" in self.model.lower()

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Steps and guidance when left to their defaults: 30 and 7.5, or 1 and 0 for Turbo models (image-to-image
        runs int(steps x strength) steps, so a Turbo model then needs enough for one of them)."""
        steps, guidance = params["steps"], params["guidance"]
        if steps is None:
            img2img = params["init_image"] is not None
            steps = (math.ceil(1 / params["strength"]) if img2img else 1) if self.is_turbo else DEFAULT_STEPS
        if guidance is None:
            guidance = 0.0 if self.is_turbo else DEFAULT_GUIDANCE
        return {**params, "steps": steps, "guidance": guidance}

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        size = (params["width"] or 512, params["height"] or 512)  # 512: SD 1.x's native size
        if params["init_image"] is not None:
            size = _sized(_open_image(params["init_image"]), params["width"], params["height"]).size
            self._check_task_exists(img2img=True)
        self.check_pixels(len(prompts), *size)
        if params["compile"]:
            from ...runtime.devices import require_compiler

            require_compiler(self.manager.device)

    def _check_task_exists(self, img2img: bool) -> None:
        """That diffusers has an image-to-image pipeline for this model class, read from model_index.json."""
        index = self.source.json("model_index.json") if self.source.path is None or self.source.path.is_dir() else None
        if not index or not img2img:
            return
        from diffusers.pipelines.auto_pipeline import AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, _get_task_class

        try:
            _get_task_class(AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, index.get("_class_name", ""))
        except ValueError as error:
            raise ConfigError(
                f"this model ({index.get('_class_name')}) has no image-to-image pipeline in diffusers: {error}",
                field="init_image",
            ) from None

    def variant(self, params: dict[str, Any]) -> dict[str, Any]:
        """The load-time switches that differ from the defaults: such a copy is another cached model (the default
        copy keeps the plain key, so `manager.key(family, model)` finds it)."""
        switches = {"safety_checker": bool(params["safety_checker"]), **self.module_switches(params)}
        defaults = {"safety_checker": False, **self.module_switches({})}
        return {name: value for name, value in switches.items() if value != defaults[name]}

    def module_switches(self, params: dict[str, Any]) -> dict[str, bool]:
        """fuse_qkv, channels_last and compile as they will be applied on this manager's device."""
        switches = {name: params.get(name, self.params[name].default) for name in MODULE_SWITCHES}
        if switches["channels_last"] is None:
            switches["channels_last"] = self.manager.device.type == "cuda"
        return {name: bool(value) for name, value in switches.items()}

    def load(self, **variant: Any) -> Any:
        """The pipeline on the CPU, in the manager's dtype, with the module switches applied; the manager moves
        its components to the device (Module.to keeps the channels-last layout)."""
        switches = {**self.module_switches({}), **{k: v for k, v in variant.items() if k in MODULE_SWITCHES}}
        pipe = self._load_pipeline(bool(variant.get("safety_checker", False)))
        _tune(pipe, **switches)
        return pipe

    def _load_pipeline(self, safety_checker: bool) -> Any:
        path = self.source.path
        if path is not None and path.is_file():
            return self._load_single_file(path, safety_checker)
        from diffusers import DiffusionPipeline

        # a cached Hub model loads by id, so diffusers finds every file it needs in the cache itself
        target = self.source.repo_id if self.source.kind == "hub" else self.source.load_target
        kwargs: dict[str, Any] = {}
        if not safety_checker and "safety_checker" in (self.source.json("model_index.json") or {"safety_checker": 1}):
            kwargs = {"safety_checker": None, "requires_safety_checker": False}  # SDXL has none, and warns if told
        try:
            pipe = DiffusionPipeline.from_pretrained(target, dtype=self.dtype, use_safetensors=True, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} could not be loaded from {target}: {error}") from error
        if safety_checker and getattr(pipe, "safety_checker", None) is None:
            raise ModelLoadError(
                f"safety_checker=True, but model={self.model!r} ships no safety checker; "
                "use safety_checker=False or another model."
            )
        return pipe

    def _load_single_file(self, path: Path, safety_checker: bool) -> Any:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        xl = "xl" in path.name.lower()
        cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
        kwargs = {} if xl or safety_checker else {"safety_checker": None, "requires_safety_checker": False}
        try:
            return cls.from_single_file(str(path), dtype=self.dtype, **kwargs)
        except Exception as error:  # noqa: BLE001 - offline config look-ups and odd checkpoints fail many ways
            raise ModelLoadError(
                f"model={self.model!r}: the single-file checkpoint could not be loaded ({type(error).__name__}: "
                f"{error}). diffusers needs the original model's configuration from the Hub for that, which "
                "fails offline; convert it once where the Hub is reachable "
                f"(StableDiffusion{'XL' if xl else ''}Pipeline.from_single_file(path).save_pretrained(dir)) "
                "and pass that diffusers directory instead."
            ) from error

    def preprocess(self, pipe: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        """(prompt, seed, init image) per image; the init image is opened and sized once for all of them."""
        init = params["init_image"]
        if init is not None:
            init = _sized(_open_image(init), params["width"], params["height"])
        return [(prompt, seed, init) for prompt, seed in zip(prompts, seeds, strict=True)]

    def forward(self, pipe: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        import torch

        from . import denoise

        init = items[0][2]
        view = _view(pipe, params["scheduler"], init is not None)
        device, steps, guidance = self.manager.device, params["steps"], params["guidance"]
        prompts = [prompt for prompt, _, _ in items]
        generators = [torch.Generator(device=device).manual_seed(seed) for _, seed, _ in items]
        own = params["fast_loop"] and denoise.supports(view)
        tiled = False
        with torch.inference_mode():
            if own:
                size = init.size if init is not None else denoise.image_size(view, params["width"], params["height"])
                tiled = params["vae_tiling"] if params["vae_tiling"] is not None else max(size) > TILE_ABOVE
                on_step = (lambda step, total: self.report("denoise", step, total)) if self.reporting else None
                images, flags = denoise.generate(
                    view,
                    prompts,
                    generators,
                    steps=steps,
                    guidance=guidance,
                    negative_prompt=params["negative_prompt"],
                    width=params["width"],
                    height=params["height"],
                    init=init,
                    strength=params["strength"],
                    tiled=tiled,
                    on_step=on_step,
                )
            else:
                images, flags = _stock(view, prompts, generators, params, init)
        fast = _fast_paths(view, self.module_switches(params), own=own, guided=guidance > 1, tiled=tiled)
        outputs = []
        for row, image in enumerate(images):
            info: dict[str, Any] = {
                "width": image.width,
                "height": image.height,
                "steps": steps,
                "guidance": guidance,
                "scheduler": type(view.scheduler).__name__,
            }
            if init is not None:
                info["strength"] = params["strength"]
            if flags is not None:
                info["nsfw"] = bool(flags[row])
            info["fast"] = fast
            outputs.append(Output(image, info))
        return outputs


def _single_file_problem(source: models.ModelSource) -> str | None:
    """Why a single-file checkpoint cannot be a Stable Diffusion model, read from its header or zip index alone."""
    if source.suffix == ".safetensors":
        tensors = source.tensor_names()
        if tensors is None:
            return "it is not a readable .safetensors file (its header does not parse: damaged or truncated)."
        if not any(name.startswith(_SD_KEYS) for name in tensors):
            return "this .safetensors file holds no Stable Diffusion checkpoint (no 'model.diffusion_model.*' weights)."
        return None
    import zipfile

    try:  # a .ckpt saved by torch is a zip archive; its index is at the end, so this reads little
        with zipfile.ZipFile(source.file) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return (
            f"it is not a readable .ckpt checkpoint ({error}: damaged, truncated, or an old pickle format aigc "
            "does not load); pass a .safetensors checkpoint or a diffusers directory."
        )
    return None


def _stock(
    pipe: Any, prompts: list[str], generators: list[Any], params: dict[str, Any], init: Any
) -> tuple[list[Any], list[bool] | None]:
    """The stock diffusers pipeline call: SDXL and any pipeline aigc's loop does not reproduce."""
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": params["steps"],
        "guidance_scale": params["guidance"],
        "generator": generators,
        "num_images_per_prompt": 1,
        "output_type": "pil",
    }
    if params["negative_prompt"] is not None:
        kwargs["negative_prompt"] = [params["negative_prompt"]] * len(prompts)
    if init is None:
        kwargs.update(width=params["width"], height=params["height"])
    else:
        kwargs.update(image=[init] * len(prompts), strength=params["strength"])
    if progress.active():

        def on_step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            progress.report("denoise", step + 1, getattr(_pipe, "num_timesteps", params["steps"]))
            return tensors

        kwargs["callback_on_step_end"] = on_step_end
    result = pipe(**kwargs)
    return result.images, getattr(result, "nsfw_content_detected", None)


def _tune(pipe: Any, *, fuse_qkv: bool, channels_last: bool, compile: bool) -> None:
    """The module-level speed-ups, applied once to a freshly loaded pipeline (they change its modules).

    Attention keeps diffusers' default SDPA processors (fused ones are SDPA too); nothing here swaps them for
    the slower classic AttnProcessor, as set_default_attn_processor() would. fuse_qkv keeps the unfused
    projections beside the fused ones (diffusers does not drop them): about 7% more UNet weights for SD 1.5.
    """
    import torch

    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        if fuse_qkv and hasattr(module, "fuse_qkv_projections"):
            try:
                module.fuse_qkv_projections()
            except ValueError as error:  # e.g. attention with added KV projections
                raise ModelLoadError(
                    f"fuse_qkv=True cannot fuse this model's {name} ({error}); pass fuse_qkv=False."
                ) from error
        if channels_last:
            module.to(memory_format=torch.channels_last)
    if compile:
        try:
            pipe.unet.compile_repeated_blocks(fullgraph=True)  # regional: one compile serves every repeated block
        except (AttributeError, ValueError) as error:
            unet = type(getattr(pipe, "unet", None)).__name__
            raise ModelLoadError(
                f"compile=True: this model's UNet ({unet}) has no repeated blocks to compile "
                f"({error}); pass compile=False."
            ) from error


def _fast_paths(pipe: Any, switches: dict[str, bool], *, own: bool, guided: bool, tiled: bool) -> list[str]:
    """The names of the fast paths a call used, for its info."""
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    unet = getattr(pipe, "unet", None)
    processors = list(unet.attn_processors.values()) if unet is not None else []
    sdpa = bool(processors) and all(isinstance(p, (AttnProcessor2_0, FusedAttnProcessor2_0)) for p in processors)
    used = {
        "aigc-loop": own,
        "prompt-reuse": own,
        "batched-cfg": guided,
        "fused-qkv": switches["fuse_qkv"],
        "channels-last": switches["channels_last"],
        "sdpa": sdpa,
        "compiled": switches["compile"],
        "vae-tiling": tiled,
    }
    return [name for name, on in used.items() if on]


def _view(pipe: Any, scheduler: str | None, img2img: bool) -> Any:
    """A new pipeline over the cached pipeline's modules (no weights copied) with a fresh scheduler."""
    import diffusers
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    scheduler_cls = getattr(diffusers, SCHEDULERS[scheduler]) if scheduler else type(pipe.scheduler)
    fresh = scheduler_cls.from_config(pipe.scheduler.config)
    auto = AutoPipelineForImage2Image if img2img else AutoPipelineForText2Image
    try:
        view = auto.from_pipe(pipe, scheduler=fresh)
    except ValueError as error:
        task = "image-to-image" if img2img else "text-to-image"
        raise ConfigError(f"this model ({type(pipe).__name__}) has no {task} pipeline in diffusers: {error}") from error
    view.set_progress_bar_config(disable=True)  # its steps are reported to aigc's own progress (progress.py)
    return view


def _open_image(value: Any) -> Any:
    """The init image as RGB; a file is read with Pillow's decompression-bomb guard and its size checked from its
    header (the megapixels limit for images read, 8192 px a side) before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    from ... import limits

    if isinstance(value, Image.Image):
        limits.check_image(value.width, value.height, "init_image", field="init_image")
        return _bounded(value).convert("RGB")
    try:
        with Image.open(Path(value).expanduser()) as image:
            limits.check_image(image.width, image.height, f"init_image={str(value)!r}", field="init_image")
            return _bounded(image).convert("RGB")
    except ConfigError:
        raise
    except Image.DecompressionBombError as error:
        raise ConfigError(f"init_image={value!r} is far too large to open ({error}).", field="init_image") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise ConfigError(f"init_image={value!r} is not a readable image: {error}", field="init_image") from None


def _bounded(image: Any) -> Any:
    """Refuse an init image larger than a generated image may be (2048 px a side) before decoding its pixels."""
    if max(image.size) > 2048 * 4:
        raise ConfigError(
            f"init_image is {image.width}x{image.height} pixels; at most 8192 a side is read (it is "
            "then scaled to width= and height=).",
            field="init_image",
        )
    return image


def _sized(image: Any, width: int | None, height: int | None) -> Any:
    """The init image at the requested size, or at its own size rounded down to multiples of 8."""
    target = (width or image.width // 8 * 8, height or image.height // 8 * 8)
    if min(target) < 64:
        raise ConfigError(
            f"init_image is {image.width}x{image.height}; it must be at least 64x64 pixels, "
            "or pass width= and height= to scale it.",
            field="init_image",
        )
    if max(target) > 2048:
        raise ConfigError(
            f"init_image is {image.width}x{image.height}; images are at most 2048 px a side, so pass "
            "width= and height= (it is scaled to them).",
            field="init_image",
        )
    return image if target == image.size else image.resize(target)

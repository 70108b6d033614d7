"""Image generation with Stable Diffusion through diffusers: text-to-image, and image-to-image from an init image.

Every image gets its own seeded torch.Generator, so an image with seed s is the same alone or in a batch.
The loaded pipeline is cached and shared, so each call builds a light pipeline view over its modules with
its own scheduler instance: schedulers keep per-run state and must not be shared between calls or threads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import models
from ..errors import ConfigError, ModelLoadError
from .base import Generator, Output, Param

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
}
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class DiffusionGenerator(Generator):
    """Stable Diffusion (1.x, 2.x, XL) from a Hub id, a diffusers directory or a single .safetensors/.ckpt file.

    `steps` and `guidance` default to 30 and 7.5, except for SD-Turbo style models (the model reference
    contains "turbo"), which are distilled for one step without classifier-free guidance: there they
    default to 1 step (enough steps for one denoising step at the given `strength` with an init image)
    and guidance 0. The values actually used are in each Output's info.

    The safety checker is off unless `safety_checker=True`: it is a user's choice, and it costs a second
    CLIP model in memory. With it on, flagged images come back black with info["nsfw"] = True.
    """

    kind = "image"
    family = "diffusion"
    params = {
        "steps": Param(None, f"denoising steps (default {DEFAULT_STEPS}; 1 for SD-Turbo models)", "int", 1, 500),
        "guidance": Param(None, f"classifier-free guidance scale (default {DEFAULT_GUIDANCE}; 0 for SD-Turbo); "
                                "<= 1 turns guidance and the negative prompt off", "float", 0.0, 30.0),
        "negative_prompt": Param(None, "what the image should not show", "str"),
        "width": Param(None, "image width in pixels, a multiple of 8 (default: the model's native size)",
                       "int", 64, 2048),
        "height": Param(None, "image height in pixels, a multiple of 8 (default: the model's native size)",
                        "int", 64, 2048),
        "scheduler": Param(None, "sampler (default: the model's own)", "str", choices=tuple(SCHEDULERS)),
        "init_image": Param(None, "start from this image (a path or a PIL image): image-to-image", "str"),
        "strength": Param(0.8, "with init_image: how much of it to repaint (1 ignores it entirely)", "float",
                          0.0, 1.0, min_exclusive=True),
        "safety_checker": Param(False, "run the model's NSFW safety checker (blacks out flagged images)", "bool"),
        "batch_size": Param(None, "images denoised together (default: all); halves itself on out-of-memory",
                            "int", 1, record=False),
    }

    @classmethod
    def check_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The base checks, plus the rules one Param cannot express: multiples of 8 and the init image."""
        given = dict(given)
        image = given.get("init_image")
        pil_image = _is_pil(image)
        if pil_image:
            given.pop("init_image")  # a PIL image is allowed, but Param only knows paths (str)
        elif isinstance(image, os.PathLike):
            given["init_image"] = os.fspath(image)
        checked = super().check_params(given)
        if pil_image:
            checked["init_image"] = image
        for name in ("width", "height"):
            value = checked[name]
            if value is not None and value % 8:
                low, high = value - value % 8, value - value % 8 + 8
                hint = f"try {low} or {high}" if low >= 64 else f"try {high}"
                raise ConfigError(f"{name}={value} must be a multiple of 8 ({hint}).")
        path = checked["init_image"]
        if isinstance(path, str) and not Path(path).expanduser().is_file():
            raise ConfigError(f"init_image={path!r}: no such file; pass an image path or a PIL image.")
        steps = checked["steps"]
        if checked["init_image"] is not None and steps is not None and int(steps * checked["strength"]) < 1:
            raise ConfigError(
                f"steps={steps} with strength={checked['strength']} leaves no denoising step "
                f"(steps x strength < 1); raise steps to {math.ceil(1 / checked['strength'])} or raise strength."
            )
        return checked

    def check_model(self) -> None:
        self.source = models.resolve(self.model)
        path = self.source.path
        if path is None:
            return  # a Hub id that is not cached yet, with network allowed: from_pretrained downloads it
        if path.is_file():
            if path.suffix.lower() not in _SINGLE_FILE_SUFFIXES:
                raise ModelLoadError(
                    f"model={self.model!r}: a {path.suffix or 'extensionless'} file cannot be a Stable Diffusion "
                    "model; pass a .safetensors/.ckpt checkpoint or a diffusers directory (with model_index.json)."
                )
        elif not (path / "model_index.json").exists():
            found = "a transformers model (config.json)" if (path / "config.json").exists() else "no model_index.json"
            raise ModelLoadError(
                f"model={self.model!r}: {path} holds {found}, so it is not a diffusers pipeline directory; "
                "pass a directory saved with pipeline.save_pretrained(dir), a Hub id like "
                "'stable-diffusion-v1-5/stable-diffusion-v1-5', or a single .safetensors checkpoint."
            )

    @property
    def is_turbo(self) -> bool:
        return "turbo" in self.model.lower()

    def load(self, safety_checker: bool = False) -> Any:
        """The pipeline on the CPU, in the manager's dtype; the manager moves its components to the device."""
        path = self.source.path
        if path is not None and path.is_file():
            return self._load_single_file(path, safety_checker)
        from diffusers import DiffusionPipeline

        # a cached Hub model loads by id, so diffusers finds every file it needs in the cache itself
        target = self.source.repo_id if self.source.kind == "hub" else self.source.load_target
        kwargs: dict[str, Any] = {}
        if not safety_checker and self._has_safety_checker():
            kwargs = {"safety_checker": None, "requires_safety_checker": False}
        try:
            pipe = DiffusionPipeline.from_pretrained(target, dtype=self.dtype, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} could not be loaded from {target}: {error}") from error
        if safety_checker and getattr(pipe, "safety_checker", None) is None:
            raise ModelLoadError(f"safety_checker=True, but model={self.model!r} ships no safety checker; "
                                 "use safety_checker=False or another model.")
        return pipe

    def _has_safety_checker(self) -> bool:
        """Whether model_index.json names a safety checker (SDXL has none, and warns if told to drop one)."""
        path = self.source.path
        if path is None or not (path / "model_index.json").exists():
            return True  # unknown until downloaded: SD 1.x/2.x do, and the kwargs are harmless otherwise
        return "safety_checker" in json.loads((path / "model_index.json").read_text())

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

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        init = _open_image(params["init_image"]) if params["init_image"] is not None else None
        if init is not None:
            init = _sized(init, params["width"], params["height"])
        steps, guidance = self._steps_and_guidance(params, init is not None)
        checker = bool(params["safety_checker"])
        key = self.manager.key(self.family + ("+safety-checker" if checker else ""), self.model, self.dtype)
        with self.manager.use(key, lambda: self.load(safety_checker=checker)) as loaded:
            pipe = _view(loaded, params["scheduler"], init is not None)
            items = list(zip(prompts, seeds))
            run = lambda chunk: self._denoise(pipe, chunk, params, init, steps, guidance)  # noqa: E731
            return self.manager.run_batched(run, items, params["batch_size"])

    def _steps_and_guidance(self, params: dict[str, Any], img2img: bool) -> tuple[int, float]:
        steps, guidance = params["steps"], params["guidance"]
        if steps is None:
            # img2img runs int(steps * strength) steps, so a turbo model needs enough for one of them
            steps = (math.ceil(1 / params["strength"]) if img2img else 1) if self.is_turbo else DEFAULT_STEPS
        if guidance is None:
            guidance = 0.0 if self.is_turbo else DEFAULT_GUIDANCE
        if img2img and int(steps * params["strength"]) < 1:
            raise ConfigError(f"steps={steps} with strength={params['strength']} leaves no denoising step; "
                              f"pass steps={math.ceil(1 / params['strength'])} or more.")
        return steps, guidance

    @torch.inference_mode()
    def _denoise(self, pipe: Any, items: Sequence[tuple[str, int]], params: dict[str, Any], init: Any,
                 steps: int, guidance: float) -> list[Output]:
        device = self.manager.device
        prompts = [prompt for prompt, _ in items]
        generators = [torch.Generator(device=device).manual_seed(seed) for _, seed in items]
        kwargs: dict[str, Any] = {
            "prompt": prompts, "num_inference_steps": steps, "guidance_scale": guidance,
            "generator": generators, "num_images_per_prompt": 1, "output_type": "pil",
        }
        if params["negative_prompt"] is not None:
            kwargs["negative_prompt"] = [params["negative_prompt"]] * len(prompts)
        if init is None:
            kwargs.update(width=params["width"], height=params["height"])
        else:
            kwargs.update(image=[init] * len(prompts), strength=params["strength"])
        result = pipe(**kwargs)
        flags = getattr(result, "nsfw_content_detected", None)
        outputs = []
        for row, image in enumerate(result.images):
            info: dict[str, Any] = {"width": image.width, "height": image.height, "steps": steps,
                                    "guidance": guidance, "scheduler": type(pipe.scheduler).__name__}
            if init is not None:
                info["strength"] = params["strength"]
            if flags is not None:
                info["nsfw"] = bool(flags[row])
            outputs.append(Output(image, info))
        return outputs


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
    view.set_progress_bar_config(disable=None, leave=False)  # None: tqdm hides the bar when stderr is no TTY
    return view


def _is_pil(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


def _open_image(value: Any) -> Any:
    from PIL import Image, UnidentifiedImageError

    if _is_pil(value):
        return value.convert("RGB")
    try:
        with Image.open(Path(value).expanduser()) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ConfigError(f"init_image={value!r} is not a readable image: {error}") from None


def _sized(image: Any, width: int | None, height: int | None) -> Any:
    """The init image at the requested size, or at its own size rounded down to multiples of 8."""
    target = (width or image.width // 8 * 8, height or image.height // 8 * 8)
    if min(target) < 64:
        raise ConfigError(f"init_image is {image.width}x{image.height}; it must be at least 64x64 pixels, "
                          "or pass width= and height= to scale it.")
    return image if target == image.size else image.resize(target)

"""Stable Diffusion's upscalers through diffusers: the x4 upscaler (prompt-guided, with a noise level) and the x2
latent upscaler. Each image gets its own seeded torch.Generator, so an image is the same alone or in a batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import ModelLoadError

X4 = "StableDiffusionUpscalePipeline"
LATENT = "StableDiffusionLatentUpscalePipeline"
SCALES = {X4: 4, LATENT: 2}  # model_index.json's _class_name -> the factor it upscales by
DEFAULTS = {X4: (75, 9.0), LATENT: (20, 0.0)}  # steps and guidance: diffusers' for x4, the model card's for latent
NOISE_LEVEL = 20  # the x4 pipeline's default: how much noise the low-resolution input gets before denoising


def load(target: str, dtype: Any) -> Any:
    """The pipeline on the CPU in `dtype`; its progress bars off (aigc reports the steps itself)."""
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(target, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"the upscaler at {target} could not be loaded: {error}") from error
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(
    pipe: Any,
    prompts: list[str],
    generators: list[Any],
    image: Any,
    params: dict[str, Any],
    on_step: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """One upscaled PIL image per prompt, all from the same input image, each drawn from its own generator."""
    pipe = _view(pipe)
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "image": [image] * len(prompts),
        "num_inference_steps": params["steps"],
        "guidance_scale": params["guidance"],
        "generator": generators,
        "output_type": "pil",
    }
    if type(pipe).__name__ == X4:
        kwargs["noise_level"] = params["noise_level"]
    if params["negative_prompt"] is not None:
        kwargs["negative_prompt"] = [params["negative_prompt"]] * len(prompts)
    if on_step is not None:
        kwargs["callback"] = lambda step, _t, _latents: on_step(step + 1, params["steps"])
    return list(pipe(**kwargs).images)


def _view(pipe: Any) -> Any:
    """A new pipeline over the cached one's modules (no weights copied) with fresh schedulers: a scheduler keeps
    per-run state, so two calls (a server's threads) must never share one."""
    parts = dict(pipe.components)
    for name in ("scheduler", "low_res_scheduler"):
        if parts.get(name) is not None:
            parts[name] = type(parts[name]).from_config(parts[name].config)
    extra = {"max_noise_level": pipe.config.max_noise_level} if type(pipe).__name__ == X4 else {}
    view = type(pipe)(**parts, **extra)
    view.set_progress_bar_config(disable=True)
    return view

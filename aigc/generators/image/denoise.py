"""aigc's own Stable Diffusion loop (SD 1.x, 2.x, Turbo): the stock pipeline's maths with fewer waits.

Compared with `StableDiffusionPipeline.__call__`, each distinct prompt is encoded once for the whole batch,
guidance runs one UNet call on [uncond; cond], the scheduler sees its timesteps as Python numbers (so no
step waits for the device to answer a question about a timestep), and the images leave the device once,
as uint8. Random numbers are drawn exactly as diffusers draws them, so a seed gives the stock pipeline's image.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch


def supports(pipe: Any) -> bool:
    """Whether this loop reproduces `pipe`: SD text-to-image or image-to-image, without guidance embeddings (LCM)."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    stable = type(pipe) in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline)
    return stable and pipe.unet.config.time_cond_proj_dim is None


def image_size(pipe: Any, width: int | None, height: int | None) -> tuple[int, int]:
    """The size diffusers would pick: the given one, else the UNet's native size in pixels."""
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return width or native, height or native


class LoopInputs(NamedTuple):
    """What the denoising loop starts from, all prepared before it."""

    latents: torch.Tensor  # (images, 4, h, w) on the device
    embeds: torch.Tensor  # one row per image; [uncond rows; cond rows] when guided
    timesteps: list  # Python numbers: what the scheduler's arithmetic sees
    model_timesteps: torch.Tensor  # the same schedule on the device: what the UNet sees
    guidance: float
    step_kwargs: dict[str, Any]


@torch.inference_mode()
def generate(
    pipe: Any,
    prompts: Sequence[str],
    generators: Sequence[torch.Generator],
    *,
    batch_cfg: bool = True,
    on_step: Any = None,
    **options: Any,
) -> tuple[list[Any], list[bool] | None]:
    """One image per (prompt, generator), and the safety checker's flags (None without one).

    `options` are prepare()'s. `reuse_prompts=False` and `batch_cfg=False` give the stock behaviour back
    (every row encoded; two UNet calls per guided step), for comparisons.
    """
    inputs = prepare(pipe, prompts, generators, **options)
    return decode(pipe, loop(pipe.unet, pipe.scheduler, inputs, batch_cfg, on_step), options.get("tiled", False))


def prepare(
    pipe: Any,
    prompts: Sequence[str],
    generators: Sequence[torch.Generator],
    *,
    steps: int,
    guidance: float,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    init: Any = None,
    strength: float = 0.8,
    tiled: bool = False,
    reuse_prompts: bool = True,
) -> LoopInputs:
    """Embeddings, schedule and starting latents, as the stock pipeline prepares them; `init` (a PIL image)
    makes it image-to-image, `tiled` encodes that image in VAE tiles."""
    device = pipe.unet.device
    guided = guidance > 1
    embeds = encode_prompts(pipe, prompts, negative_prompt if guided else None, guided, reuse_prompts)
    timesteps, model_timesteps = schedule(pipe, steps, strength if init is not None else None, device)
    if init is None:
        width, height = image_size(pipe, width, height)
        shape = (
            len(prompts),
            pipe.unet.config.in_channels,
            height // pipe.vae_scale_factor,
            width // pipe.vae_scale_factor,
        )
        latents = noise(shape, generators, device, embeds.dtype) * pipe.scheduler.init_noise_sigma
    else:
        latents = image_latents(pipe, init, generators, model_timesteps[:1], embeds.dtype, tiled)
    return LoopInputs(
        latents, embeds, timesteps, model_timesteps, guidance, extra_step_kwargs(pipe.scheduler, generators)
    )


def encode_prompts(
    pipe: Any, prompts: Sequence[str], negative: str | None, guided: bool, reuse: bool = True
) -> torch.Tensor:
    """Text embeddings, one row per image ([uncond rows; cond rows] when guided), from one text-encoder call.

    With `reuse`, each distinct text (and the negative or empty prompt) is encoded once and its row shared:
    n images of one prompt cost one encoder row, not 2n as in the stock pipeline.
    """
    wanted = ([negative or ""] * len(prompts) if guided else []) + list(prompts)
    texts = list(dict.fromkeys(wanted)) if reuse else wanted
    encoded, _ = pipe.encode_prompt(texts, pipe.unet.device, 1, False)
    if not reuse:
        return encoded
    row = {text: i for i, text in enumerate(texts)}
    return encoded[torch.tensor([row[text] for text in wanted], device=encoded.device)]


def schedule(pipe: Any, steps: int, strength: float | None, device: torch.device) -> tuple[list, torch.Tensor]:
    """The timesteps to run: as Python numbers for the scheduler, and copied once to the device for the UNet.

    The scheduler's own tables stay on the CPU, so its arithmetic on plain numbers never reads the device.
    Image-to-image skips the first (1 - strength) of the schedule, as diffusers' get_timesteps does.
    """
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device="cpu")
    if strength is None:
        timesteps = scheduler.timesteps
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)  # else the first step finds its index with nonzero() on the timestep
    else:
        timesteps, _ = pipe.get_timesteps(steps, strength, "cpu")  # also sets the scheduler's begin index
    return timesteps.tolist(), timesteps.to(device, copy=True)  # copy: the UNet's own, never the scheduler's table


def noise(
    shape: tuple[int, ...], generators: Sequence[torch.Generator], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Row i drawn from generators[i], exactly as the stock pipeline draws it (diffusers' randn_tensor)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=list(generators), device=device, dtype=dtype)


def image_latents(
    pipe: Any,
    init: Any,
    generators: Sequence[torch.Generator],
    first_timestep: torch.Tensor,
    dtype: torch.dtype,
    tiled: bool,
) -> torch.Tensor:
    """The init image's latents, noised to the first timestep, as diffusers' img2img prepare_latents does.

    The VAE encodes the image once for the batch (every image starts from the same picture), and each image
    samples its latent with its own generator, so the numbers are the stock pipeline's.
    """
    vae = pipe.vae
    image = pipe.image_processor.preprocess(init).to(vae.device, dtype)
    encoded = (vae.tiled_encode(image) if tiled else vae.encode(image)).latent_dist
    latents = torch.cat([encoded.sample(g) for g in generators]) * vae.config.scaling_factor
    return pipe.scheduler.add_noise(
        latents, noise(latents.shape, generators, latents.device, dtype), first_timestep.repeat(len(generators))
    )


def extra_step_kwargs(scheduler: Any, generators: Sequence[torch.Generator]) -> dict[str, Any]:
    """The generators for schedulers that draw noise inside step() (euler_a; DDIM with eta > 0).

    diffusers passes its generator list straight through, and randn_tensor draws row i from generators[i],
    so each image keeps its own random stream and is the same alone or in a batch.
    """
    return {"generator": list(generators)} if "generator" in inspect.signature(scheduler.step).parameters else {}


def loop(unet: Any, scheduler: Any, inputs: LoopInputs, batch_cfg: bool = True, on_step: Any = None) -> torch.Tensor:
    """The denoising loop. Nothing in it reads a device value, so the host queues every step without waiting.

    Guidance (> 1) runs the UNet once on [latents; latents] against [uncond; cond] embeddings (twice, one
    half each, with batch_cfg=False); at guidance <= 1 (Turbo) there is no unconditional half at all.
    """
    latents, embeds, timesteps, model_timesteps, guidance, step_kwargs = inputs
    for i, t in enumerate(timesteps):
        x = scheduler.scale_model_input(latents, t)
        if guidance <= 1:
            predicted = unet(x, model_timesteps[i], encoder_hidden_states=embeds, return_dict=False)[0]
        else:
            if batch_cfg:
                both = unet(torch.cat([x, x]), model_timesteps[i], encoder_hidden_states=embeds, return_dict=False)[0]
                uncond, cond = both.chunk(2)
            else:
                uncond, cond = (
                    unet(x, model_timesteps[i], encoder_hidden_states=half, return_dict=False)[0]
                    for half in embeds.chunk(2)
                )
            predicted = uncond + guidance * (cond - uncond)
        latents = scheduler.step(predicted, t, latents, **step_kwargs, return_dict=False)[0]
        if on_step is not None:  # a host-side count only: nothing is read from the device
            on_step(i + 1, len(timesteps))
    return latents


def decode(pipe: Any, latents: torch.Tensor, tiled: bool) -> tuple[list[Any], list[bool] | None]:
    """All latents through the VAE in one call, uint8 on the device, one copy to the host, then PIL.

    The pixel arithmetic is the stock postprocess's (denormalise in the model dtype, x255 in float32, round),
    so equal latents give equal pixels. Images the safety checker flags come back black, as in diffusers.
    """
    from PIL import Image

    vae = pipe.vae
    latents = latents / vae.config.scaling_factor
    images = (vae.tiled_decode(latents, return_dict=False) if tiled else vae.decode(latents, return_dict=False))[0]
    flags = None
    if getattr(pipe, "safety_checker", None) is not None:
        images, flags = pipe.run_safety_checker(images, latents.device, latents.dtype)
    pixels = ((images / 2 + 0.5).clamp(0, 1).float() * 255).round().to(torch.uint8)
    if flags is not None and any(flags):
        pixels[[row for row, flagged in enumerate(flags) if flagged]] = 0
    pixels = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(row) for row in pixels], None if flags is None else [bool(f) for f in flags]

"""The diffusion backend's knobs: each Param the one owner of its default, range, help and A1111 label.

Declared apart from the generator (diffusion.py) so its knobs read in one place: text-to-image, image-to-image,
editing (mask, outpaint), ControlNet, hires fix, and the speed switches.
"""

from __future__ import annotations

from ..knobs import Nudge, Param
from . import hires

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
}
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
TILE_ABOVE = 1024  # pixels: a wider or higher image is decoded in VAE tiles (memory); smaller ones never (seams)

PARAMS: dict[str, Param] = {
    "steps": Param(
        None,
        f"denoising steps (default {DEFAULT_STEPS}; 1 for SD-Turbo models)",
        "int",
        1,
        500,
        nudge=Nudge(novelty=0, relevance=0, quality=10, low=1, high=100),
        a1111="Steps",
    ),
    "scheduler": Param(None, "sampler (default: the model's own)", "str", choices=tuple(SCHEDULERS), a1111="Sampler"),
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
    "width": Param(None, "image width in pixels (default: the model's native size)", "int", 64, 2048, multiple_of=8),
    "height": Param(None, "image height in pixels (default: the model's native size)", "int", 64, 2048, multiple_of=8),
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
    "mask": Param(
        None,
        "with init_image: repaint only where this image is white (black = keep, grey blends); a path or a PIL "
        "image of init_image's size: inpainting",
        "image",
    ),
    "mask_blur": Param(
        4, "with mask or outpaint: soften the mask's edge by this many pixels", "int", 0, 64, a1111="Mask blur"
    ),
    "inpaint_area": Param(
        "whole",
        "with mask: 'whole' repaints at the image's size; 'masked' crops around the mask, generates that "
        "crop at width x height (default: the image's size) and pastes it back",
        "str",
        choices=("whole", "masked"),
    ),
    "inpaint_padding": Param(
        32, "with inpaint_area='masked': pixels of context kept around the mask's crop", "int", 0, 1024
    ),
    "outpaint": Param(
        None,
        "with init_image: grow the canvas by these pixels (one number for every side, or left, top, right, "
        "bottom) and generate the new area; the original area is kept",
        "sides",
        0,
        1024,
        multiple_of=8,
    ),
    "control": Param(
        None,
        "ControlNets that steer the image: a list of {model, image, scale 1.0, start 0.0, end 1.0, preprocess "
        "'none' (or canny, scribble, tile, invert), options} or aigc.Control(...); MODEL=IMAGE[:SCALE] on a "
        "command line. Without width and height the first control image sets the size",
        "controls",
    ),
    "image_prompt": Param(
        None,
        "with ip_adapter: an image (or a list of them) the result should resemble, as a prompt made of pixels",
        "image",
        several=True,
    ),
    "image_prompt_scale": Param(
        0.6, "with image_prompt: how strongly the image prompt steers (0 = not at all)", "float", 0.0, 2.0
    ),
    "ip_adapter": Param(
        None,
        "the IP-Adapter that reads image_prompt: its .safetensors weights (e.g. ip-adapter_sd15.safetensors) in "
        "a folder holding its CLIP image encoder as image_encoder/, or that folder",
        "path",
    ),
    "hires": Param(
        None,
        "hires fix for text-to-image: generate at width x height, upscale by this factor, then repaint at "
        "hires_strength for hires_steps",
        "float",
        1.0,
        4.0,
        min_exclusive=True,
        a1111="Hires upscale",
    ),
    "hires_steps": Param(
        None, "with hires: the second pass's steps (default: steps)", "int", 1, 500, a1111="Hires steps"
    ),
    "hires_strength": Param(
        0.5,
        "with hires: how much of the upscaled image the second pass repaints",
        "float",
        0.0,
        1.0,
        min_exclusive=True,
    ),
    "hires_upscaler": Param(
        "latent",
        "with hires: 'latent' scales the latents (A1111's Latent), 'lanczos' the decoded pixels, or an upscaler "
        "model (an ESRGAN-family file, as backend='upscale' takes) upscales them",
        "path",
        words=hires.UPSCALERS,
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

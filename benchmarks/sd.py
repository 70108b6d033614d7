"""Stable Diffusion 1.5 workload: the stock diffusers pipeline call vs aigc.generate (aigc's own loop).

The model is SD 1.5's architecture built from its configs with random weights (real weights are not
needed to time it: the compute is the same), saved once per dtype with save_pretrained.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch

from aigc.runtime.devices import DeviceManager

from .workloads import Workload

PROMPT = "a photograph of an astronaut riding a horse on the moon"
_dirs: dict[tuple[bool, str, bool], str] = {}


def _clip_tokenizer() -> Any:
    """A character-level CLIP tokenizer built offline: byte-level symbols (alone and word-final) and no merges.

    Its few hundred ids stay far below CLIP's 49,408, so it drives the full-size text encoder unchanged.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=77)


def _components(tiny: bool, tokenizer: Any, in_channels: int = 4) -> dict[str, Any]:
    """UNet, VAE, text encoder and scheduler with SD 1.5's configs (tiny=True: the same shape, a few channels;
    in_channels=9: sd-inpainting's UNet, which reads the mask and the masked image's latents too)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=8 if tiny else 64,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1 if tiny else 2,
        block_out_channels=(32, 32, 64, 64) if tiny else (320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32 if tiny else 768,
        attention_head_dim=8,
        norm_num_groups=16 if tiny else 32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1 if tiny else 2,
        block_out_channels=(16, 16, 32, 32) if tiny else (128, 256, 512, 512),
        norm_num_groups=16 if tiny else 32,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64 if tiny else 512,
        scaling_factor=0.18215,
    )
    text = CLIPTextConfig(  # openai/clip-vit-large-patch14's text tower
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
        hidden_size=32 if tiny else 768,
        intermediate_size=64 if tiny else 3072,
        num_hidden_layers=2 if tiny else 12,
        num_attention_heads=2 if tiny else 12,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    scheduler.register_to_config(clip_sample=False)  # SD 1.5's file has it too: DDIM built from it must not clip
    return {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(text), "scheduler": scheduler}


def _sd15_dir(dtype: torch.dtype, tiny: bool, inpainting: bool = False) -> str:
    """The random SD 1.5 pipeline (or sd-inpainting: a 9-channel UNet) saved in `dtype`, once per process."""
    key = (tiny, str(dtype), inpainting)
    if key not in _dirs:
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        tokenizer = _clip_tokenizer()
        torch.manual_seed(0)
        components = _components(tiny, tokenizer, 9 if inpainting else 4)
        for name in ("unet", "vae", "text_encoder"):
            components[name].to(dtype)
        pipe = (StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline)(
            **components,
            tokenizer=tokenizer,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        path = tempfile.mkdtemp(prefix="bench-sd15-tiny-" if tiny else "bench-sd15-")
        pipe.save_pretrained(path)
        _dirs[key] = path
    return _dirs[key]


def sd15(
    manager: DeviceManager, batch: int, steps: int, size: int = 512, turbo: bool = False, tiny: bool = False
) -> Workload:
    """`batch` images of one prompt, `steps` steps at `size` x `size`, guidance 7.5: stock vs aigc, same seeds.

    turbo=True times SD-Turbo's use instead: the same UNet, 1 step, guidance 0 (no unconditional half).
    SD-Turbo is the SD 2.1 architecture: a UNet of the same size and layout (1024-wide cross-attention,
    64-channel heads) and a larger text encoder that runs once per call, so its cost is close to this.

    compare, in levels of 255 per image: float32 on the CPU, every pixel within 1 (measured on the full-size
    model, 2 steps at 64 px: 0 with the CPU defaults, fused q/k/v included; 1 with channels-last). Elsewhere
    (bfloat16/float16, or TF32 convolutions on a GPU, where channels-last is on by default and its kernels round
    differently from the stock NCHW ones): mean difference <= 2 and every pixel within 32 (measured on the CPU
    in bfloat16 with channels-last: mean 0.96, max 9; not yet measured on a GPU). Another seed: mean ~41.
    """
    from diffusers import StableDiffusionPipeline

    import aigc

    path = _sd15_dir(manager.dtype, tiny)
    steps, guidance = (1, 0.0) if turbo else (steps, 7.5)
    seeds = list(range(batch))
    # what a diffusers user writes (`torch_dtype=` is the deprecated spelling of `dtype=` in diffusers 0.42)
    pipe = StableDiffusionPipeline.from_pretrained(path, dtype=manager.dtype, safety_checker=None).to(manager.device)
    pipe.set_progress_bar_config(disable=True)  # aigc's loop draws no bar either

    def stock() -> list[Any]:
        generators = [torch.Generator(manager.device).manual_seed(s) for s in seeds]
        return pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=size,
            width=size,
            num_images_per_prompt=batch,
            generator=generators,
        ).images

    def ours() -> list[Any]:
        assets = aigc.generate(
            "image",
            PROMPT,
            backend="diffusion",
            model=path,
            n=batch,
            seed=seeds,
            steps=steps,
            guidance=guidance,
            width=size,
            height=size,
            manager=manager,
        )
        return [a.data for a in assets]

    exact = manager.dtype == torch.float32 and manager.device.type == "cpu"
    max_levels, mean_levels = (1, 1.0) if exact else (32, 2.0)

    def same(theirs: list[Any], mine: list[Any]) -> bool:
        if len(theirs) != len(mine):
            return False
        gaps = [np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)) for a, b in zip(theirs, mine, strict=True)]
        return all(g.max() <= max_levels and g.mean() <= mean_levels for g in gaps)

    return stock, ours, same

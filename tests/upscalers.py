"""Tiny random upscalers saved as people download them, and plain functional forwards to check aigc's networks by.

The state dicts are made tensor by tensor from the layouts' key names (not with aigc's own modules), and the
reference forwards are written out with torch.nn.functional, so a wiring or renaming mistake in aigc shows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

RRDB_WIDTH, RRDB_GROWTH, RRDB_BLOCKS = 8, 4, 2
COMPACT_WIDTH, COMPACT_CONVS = 8, 2


def _conv(state: dict, name: str, cout: int, cin: int, generator: torch.Generator, gain: float = 0.1) -> None:
    state[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=generator) * gain
    state[f"{name}.bias"] = torch.randn(cout, generator=generator) * 0.01


def rrdb_state(upsamples: int = 2, unshuffle: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real-ESRGAN/BasicSR key names: conv_first, body.N.rdbK.convJ, conv_body, conv_upN, conv_hr, conv_last."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    width, growth = RRDB_WIDTH, RRDB_GROWTH
    _conv(state, "conv_first", width, 3 * unshuffle**2, g)
    for block in range(RRDB_BLOCKS):
        for dense in (1, 2, 3):
            for j in range(1, 6):
                _conv(
                    state, f"body.{block}.rdb{dense}.conv{j}", growth if j < 5 else width, width + (j - 1) * growth, g
                )
    for name in ["conv_body", *(f"conv_up{i + 1}" for i in range(upsamples)), "conv_hr"]:
        _conv(state, name, width, width, g)
    _conv(state, "conv_last", 3, width, g)
    state["conv_last.bias"] = torch.full((3,), 0.5)  # mid-grey plus detail, so the images are not clamped flat
    return state


def old_names(state: dict[str, torch.Tensor], upsamples: int = 2) -> dict[str, torch.Tensor]:
    """The same network under the original ESRGAN's keys (model.0, model.1.sub.N.RDBk.convj.0, model.3, ...)."""
    last = 3 * upsamples
    renames = {"conv_first": "model.0", "conv_body": f"model.1.sub.{RRDB_BLOCKS}", "conv_hr": f"model.{last + 2}"}
    renames |= {
        "conv_last": f"model.{last + 4}",
        **{f"conv_up{i + 1}": f"model.{3 * (i + 1)}" for i in range(upsamples)},
    }
    old = {}
    for key, value in state.items():
        name, kind = key.rsplit(".", 1)
        if name.startswith("body."):
            _, block, dense, conv = name.split(".")
            old[f"model.1.sub.{block}.RDB{dense[3:]}.{conv}.0.{kind}"] = value
        else:
            old[f"{renames[name]}.{kind}"] = value
    return old


def compact_state(scale: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact's keys: body.0 conv, body.1 PReLU, ..., the last conv with 3 x scale^2 outputs."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "body.0", COMPACT_WIDTH, 3, g)
    index = 1
    for _ in range(COMPACT_CONVS):
        state[f"body.{index}.weight"] = torch.full((COMPACT_WIDTH,), 0.25)
        _conv(state, f"body.{index + 1}", COMPACT_WIDTH, COMPACT_WIDTH, g)
        index += 2
    state[f"body.{index}.weight"] = torch.full((COMPACT_WIDTH,), 0.25)
    _conv(state, f"body.{index + 1}", 3 * scale**2, COMPACT_WIDTH, g)
    return state


def save(state: dict[str, torch.Tensor], path: Path, wrap: str | None = None) -> str:
    """As a .safetensors file, or a torch file holding the bare state dict or {wrap: state}."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save({wrap: state, "iter": 1000} if wrap else state, path)
    return str(path)


def rrdb_forward(state: dict[str, torch.Tensor], x: torch.Tensor, upsamples: int, unshuffle: int) -> torch.Tensor:
    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    def lrelu(t: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(t, 0.2)

    x = F.pixel_unshuffle(x, unshuffle) if unshuffle > 1 else x
    first = conv("conv_first", x)
    trunk = first
    for block in range(RRDB_BLOCKS):
        block_in = trunk
        for dense in (1, 2, 3):
            seen = [trunk]
            for j in range(1, 5):
                seen.append(lrelu(conv(f"body.{block}.rdb{dense}.conv{j}", torch.cat(seen, 1))))
            trunk = conv(f"body.{block}.rdb{dense}.conv5", torch.cat(seen, 1)) * 0.2 + trunk
        trunk = trunk * 0.2 + block_in
    feat = first + conv("conv_body", trunk)
    for i in range(upsamples):
        feat = lrelu(conv(f"conv_up{i + 1}", F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", feat)))


def compact_forward(state: dict[str, torch.Tensor], x: torch.Tensor, scale: int) -> torch.Tensor:
    out = x
    for index in range(0, 2 * COMPACT_CONVS + 3, 2):
        out = F.conv2d(out, state[f"body.{index}.weight"], state[f"body.{index}.bias"], padding=1)
        if f"body.{index + 1}.weight" in state:
            out = F.prelu(out, state[f"body.{index + 1}.weight"])
    return F.pixel_shuffle(out, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")


def tiny_clip_text(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_sd_x4(path: Path, tokenizer) -> str:
    """A random StableDiffusionUpscalePipeline: a 7-channel UNet (4 latents + the noised image) with a class
    embedding for the noise level, a x4 VAE (3 blocks), DDIM with v-prediction as in stabilityai's x4 model."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        num_class_embeds=1000,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64),
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        scaling_factor=0.08333,
    )
    StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=tiny_clip_text(tokenizer),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    ).save_pretrained(path)
    return str(path)


def build_latent_x2(path: Path, tokenizer) -> str:
    """A random StableDiffusionLatentUpscalePipeline: the K-diffusion UNet diffusers' own tests build (8 input
    channels: latents + the image's latents; 5 out, the last dropped; Fourier time embedding conditioned on 128
    noise-level features + the pooled text), with a 2-block VAE so a 16 px image makes 8 px latents."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        norm_num_groups=None,
        block_out_channels=(32, 32, 64, 64),
        time_cond_proj_dim=160,
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8,
        mid_block_type=None,
        only_cross_attention=False,
        out_channels=5,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    StableDiffusionLatentUpscalePipeline(
        vae=vae,
        text_encoder=tiny_clip_text(tokenizer),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    ).save_pretrained(path)
    return str(path)

"""Editing on a tiny SDXL pipeline (two CLIP text encoders, text_time embeddings): inpainting keeps what the mask
keeps, outpainting and hires fix grow it, an SDXL ControlNet steers it, and an SD 1.x ControlNet is refused."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _tiny_clip_tokenizer, build_tiny_controlnet
from PIL import Image

import aigc
from aigc.runtime.devices import DeviceManager


def build_tiny_sdxl(path):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer = _tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,  # 6 size/crop numbers x 8, plus the pooled text's 32
        cross_attention_dim=64,  # both text encoders' hidden states side by side
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        latent_channels=4,
        sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text),
        text_encoder_2=CLIPTextModelWithProjection(text),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    ).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory) -> str:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "tiny-sdxl")


@pytest.fixture(scope="module")
def manager() -> DeviceManager:
    return DeviceManager("cpu")


def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def test_sdxl_inpaints_outpaints_and_hires_fixes(sdxl, manager):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    knobs = {"steps": 2, "init_image": photo(), "mask_blur": 0}
    fixed = aigc.generate("image", "a door", model=sdxl, seed=1, mask=mask, manager=manager, **knobs)[0]
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(fixed.data)[keep], np.asarray(photo())[keep])
    assert np.abs(np.asarray(fixed.data, np.int16) - np.asarray(photo(), np.int16))[~keep].mean() > 10
    grown = aigc.generate("image", "a beach", model=sdxl, seed=1, outpaint=[0, 0, 32, 0], manager=manager, **knobs)[0]
    assert grown.data.size == (96, 64)
    assert np.array_equal(np.asarray(grown.data)[:, :64], np.asarray(photo()))
    large = aigc.generate(
        "image", "a castle", model=sdxl, seed=1, steps=2, width=64, height=64, hires=1.5, manager=manager
    )
    assert large[0].data.size == (96, 96)


def test_an_sdxl_controlnet_steers_and_an_sd1_controlnet_is_refused(sdxl, tiny_sd, manager, tmp_path):
    net = build_tiny_controlnet(tmp_path / "controlnet-sdxl", sdxl)
    plain = aigc.generate("image", "a room", model=sdxl, seed=2, steps=2, width=64, height=64, manager=manager)[0]
    steered = aigc.generate(
        "image", "a room", model=sdxl, seed=2, steps=2, control=[{"model": str(net), "image": photo()}], manager=manager
    )[0]
    assert np.abs(np.asarray(steered.data, np.int16) - np.asarray(plain.data, np.int16)).mean() > 2
    sd1 = build_tiny_controlnet(tmp_path / "controlnet-sd1", tiny_sd)
    fresh = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match=r"is a ControlNet for an SD-style UNet of .* but model=.* is SDXL"):
        aigc.generate(
            "image", "a room", model=sdxl, steps=2, control=[{"model": str(sd1), "image": photo()}], manager=fresh
        )
    assert fresh.stats()["loads"] == 0

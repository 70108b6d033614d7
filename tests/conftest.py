"""Offline, hermetic test set-up: no Hub, no network, a private aigc cache, tiny models built once per session."""

from __future__ import annotations

import os
import socket
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["AIGC_CACHE"] = tempfile.mkdtemp(prefix="aigc-test-cache-")  # hermetic: never the user's cache
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="aigc-test-hf-cache-")  # tests place tiny "Hub" models here
os.environ["AIGC_LIBRARY"] = tempfile.mkdtemp(prefix="aigc-test-library-")  # never the user's library
os.environ.pop("AIGC_DEVICE", None)
os.environ.pop("AIGC_DTYPE", None)

import pytest  # noqa: E402

_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address) -> None:
    """An accidental Hub call must fail loudly, not hang or download."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise RuntimeError(f"tests must not use the network (tried to connect to {address})")
    return _connect(sock, address)


socket.socket.connect = _loopback_only


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def build_tiny_gpt2(path, *, seed: int = 0, with_tokenizer: bool = True, n_positions: int = 128):
    """A randomly initialised 2-layer GPT-2 with the real GPT-2 vocabulary, saved like a Hub checkpoint."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from aigc.runtime.models import gpt2_tokenizer_dir

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50257, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    if with_tokenizer:
        AutoTokenizer.from_pretrained(gpt2_tokenizer_dir()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2")))


@pytest.fixture(scope="session")
def tiny_gpt2_other(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-b"), seed=1))


@pytest.fixture(scope="session")
def tiny_gpt2_bare(tmp_path_factory) -> str:
    """A GPT-2 checkpoint without tokenizer files, as many fine-tunes are shared."""
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-bare"), seed=2, with_tokenizer=False))


def put_in_hub_cache(repo_id: str, source) -> None:
    """Lay a saved model directory out as the Hugging Face cache does, as if `hf download repo_id` had run."""
    import shutil
    from pathlib import Path

    repo = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(source, repo / "snapshots" / revision, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


@pytest.fixture
def manager():
    from aigc.runtime.devices import DeviceManager

    return DeviceManager("cpu")


def build_tiny_dcgan(path, *, nz: int = 8, widths=(32, 16, 8, 3), seed: int = 0):
    """A random DCGAN generator (4 -> 8 -> 16 -> 32 pixels) saved as a plain state dict, as people share them."""
    import torch

    from aigc.generators.image.dcgan import DCGAN

    torch.manual_seed(seed)
    model = DCGAN([nz, *widths])
    for module in model.modules():  # non-trivial running stats so eval-mode BatchNorm is really exercised
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save({"netG_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_dcgan(tmp_path_factory) -> str:
    return str(build_tiny_dcgan(tmp_path_factory.mktemp("dcgan") / "generator.pth"))


SD_SIZE = 64  # the smallest size the diffusion generator allows; the tiny VAE halves it to a 32x32 latent


def _tiny_clip_tokenizer():
    """A byte-level CLIP BPE: every byte with and without the end-of-word mark, a few merges, the specials."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    merges = [("c", "a"), ("ca", "t</w>"), ("c", "as"), ("a", "s")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_sd(path, seed: int = 0, inpainting: bool = False):
    """A randomly initialised SD 1.x-style pipeline (UNet, VAE, CLIP text encoder), saved like a Hub repo;
    `inpainting` makes it an sd-inpainting one (a 9-channel UNet: latents, mask, masked image's latents)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=SD_SIZE // 2,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=SD_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
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
    )
    # SD 1.5's own scheduler config, so DDIM and friends built from it see the settings they expect
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    scheduler.register_to_config(clip_sample=False)
    pipe = (StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline)(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> str:
    return str(build_tiny_sd(tmp_path_factory.mktemp("tiny-sd")))


def build_tiny_controlnet(path, sd_path, *, seed: int = 0, cross_attention_dim: int | None = None):
    """A ControlNet made from the tiny SD's UNet (`ControlNetModel.from_unet`), its zero convolutions randomised:
    at zero (as made) it could not change an image, and a test that it does could not fail."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sd_path, subfolder="unet")
    if cross_attention_dim is not None:  # a ControlNet for another base (another text encoder's width)
        unet = UNet2DConditionModel.from_config({**unet.config, "cross_attention_dim": cross_attention_dim})
    # the tiny VAE downsamples by 2, so the control image's embedding does too (SD's own: by 8)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in controlnet.named_parameters():
            if name.startswith(
                ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
            ):
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    controlnet.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_controlnet(tmp_path_factory, tiny_sd) -> str:
    return str(build_tiny_controlnet(tmp_path_factory.mktemp("tiny-controlnet"), tiny_sd))


def build_tiny_ip_adapter(path, sd_path, seed: int = 0):
    """An IP-Adapter for the tiny SD as h94/IP-Adapter lays one out: `ip-adapter_tiny.safetensors` (image_proj.* and,
    for each cross-attention layer in order, ip_adapter.{1,3,5...}.to_k_ip/to_v_ip) beside a tiny CLIP image
    encoder in image_encoder/. Random weights: an image prompt changes the image, and scale 0 does not."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(sd_path, subfolder="unet")
    width, embed = unet.config.cross_attention_dim, 16
    torch.manual_seed(seed)
    encoder = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=embed,
    )
    CLIPVisionModelWithProjection(encoder).save_pretrained(path / "image_encoder")
    generator = torch.Generator().manual_seed(seed)
    state = {
        "image_proj.proj.weight": torch.randn(4 * width, embed, generator=generator),
        "image_proj.proj.bias": torch.zeros(4 * width),
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    cross_attention = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for index, name in enumerate(cross_attention):
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_q.out_features
        for projection in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{2 * index + 1}.{projection}.weight"] = torch.randn(hidden, width, generator=generator)
    save_file(state, path / "ip-adapter_tiny.safetensors")
    return path / "ip-adapter_tiny.safetensors"


@pytest.fixture(scope="session")
def tiny_ip_adapter(tmp_path_factory, tiny_sd) -> str:
    return str(build_tiny_ip_adapter(tmp_path_factory.mktemp("tiny-ip-adapter"), tiny_sd))


def build_tiny_depth(path, seed: int = 0):
    """A randomly initialised DPT depth-estimation model with its image processor (32 px input), saved like a Hub
    repo: what a depth ControlNet's `annotator` names (Intel/dpt-hybrid-midas's kind, a few channels wide)."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 16, 32],
        fusion_hidden_size=16,
    )
    DPTForDepthEstimation(config).save_pretrained(path)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_depth(tmp_path_factory) -> str:
    return str(build_tiny_depth(tmp_path_factory.mktemp("tiny-dpt")))


@pytest.fixture(scope="session")
def tiny_sd_inpainting(tmp_path_factory) -> str:
    return str(build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-inpainting"), inpainting=True))


def build_tiny_vits(path, seed: int = 0):
    """A random VITS text-to-speech model with a character vocabulary, saved like facebook/mms-tts-eng."""
    import json
    from pathlib import Path

    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz'.,!?")}
    (path / "vocab.json").write_text(json.dumps(vocab))
    VitsTokenizer(
        str(path / "vocab.json"),
        add_blank=True,
        normalize=True,
        pad_token=" ",
        unk_token=" ",
        phonemize=False,
        is_uroman=False,
    ).save_pretrained(path)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        duration_predictor_num_flows=2,
        posterior_encoder_num_wavenet_layers=2,
        prior_encoder_num_wavenet_layers=2,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=2,
        sampling_rate=16000,
    )
    torch.manual_seed(seed)
    VitsModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vits(tmp_path_factory) -> str:
    return str(build_tiny_vits(tmp_path_factory.mktemp("tiny-vits")))


@pytest.fixture(scope="session")
def piper_voice() -> str:
    """The real voice pack, by reference (for tests parametrised over model fixtures)."""
    return "pack:piper-joe"


MUSIC_WORDS = ["lofi", "beat", "drums", "piano", "slow", "jazz"]  # the tiny MusicGen tokenizer's whole words


def _tiny_t5_tokenizer():
    """A T5 Unigram tokenizer over a handful of words (no sentencepiece needed): <pad>=0, </s>=1, <unk>=2."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + word, -1.0) for word in MUSIC_WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_musicgen(path, seed: int = 0):
    """A random MusicGen: 2-layer T5, a 3,200 Hz EnCodec at 50 frames/s with 2 codebooks, a 2-layer decoder."""
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    tokenizer = _tiny_t5_tokenizer()
    text = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    # hop 64 at 3,200 Hz = 50 frames/s as in musicgen-small; 16-entry codebooks, 0.4 kbps -> 2 quantizers
    codec = EncodecConfig(
        sampling_rate=3200,
        upsampling_ratios=[4, 4, 4],
        hidden_size=16,
        num_filters=4,
        codebook_size=16,
        num_lstm_layers=1,
        target_bandwidths=[0.4],
    )
    assert codec.frame_rate == 50 and codec.num_quantizers == 2
    decoder = MusicgenDecoderConfig(
        vocab_size=16,
        num_codebooks=2,
        hidden_size=16,
        ffn_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=16,
        bos_token_id=16,
        decoder_start_token_id=16,
    )
    config = MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)  # v5: no from_sub_models_config
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():  # a fresh EnCodec's codebooks are all zeros (every code sounds alike); real ones are not
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
        for head in model.decoder.lm_heads:  # peaked logits, so greedy decoding has no near-ties
            head.weight.normal_()
    model.generation_config.decoder_start_token_id = 16
    model.generation_config.pad_token_id = 16
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_musicgen(tmp_path_factory) -> str:
    return str(build_tiny_musicgen(tmp_path_factory.mktemp("tiny-musicgen")))

"""MusicGen text-to-music: stock transformers `generate` vs aigc's music backend, on musicgen-small's architecture.

The full-size model is musicgen-small's configuration with random weights (the Hub is out of reach here), so the
compute per second of audio is the real checkpoint's; `tiny=True` builds a miniature for the tests.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch

from aigc.media.audio import Audio, tidy
from aigc.runtime.devices import DeviceManager

from .workloads import Workload

PROMPT = "lofi hip hop beat with a slow jazz piano and soft drums"
_dirs: dict[bool, str] = {}


def _tokenizer() -> Any:
    """A T5 Unigram tokenizer over the prompt's words and the letters: T5's special ids, no sentencepiece file."""
    from transformers import T5Tokenizer

    words = sorted(set(PROMPT.split()))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + word, -1.0) for word in words] + [(letter, -6.0) for letter in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _config(tiny: bool, text_vocab: int) -> Any:
    """musicgen-small's configuration (T5-base text encoder, EnCodec 32 kHz, 24-layer decoder), or a miniature.

    Both codecs run at 50 frames/s with 4 codebooks, so the delay pattern and the steps per second are the real ones.
    """
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    if tiny:  # hop 4*4*2 = 32 samples at 1,600 Hz; 32-entry codebooks (5 bits) at 1.0 kbps -> 4 quantizers
        text = T5Config(
            vocab_size=text_vocab,
            d_model=16,
            d_ff=32,
            d_kv=8,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
        codec = EncodecConfig(
            sampling_rate=1600,
            upsampling_ratios=[4, 4, 2],
            hidden_size=16,
            num_filters=4,
            codebook_size=32,
            num_lstm_layers=1,
            target_bandwidths=[1.0],
        )
        # weights at 10x the default scale: at 0.02 the text barely reaches 2 layers' argmax codes, so prompt and
        # guidance would change nothing and the comparison could not catch a guidance bug
        decoder = MusicgenDecoderConfig(
            vocab_size=32,
            num_codebooks=4,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=128,
            pad_token_id=32,
            bos_token_id=32,
            initializer_factor=0.2,
        )
    else:  # facebook/musicgen-small: t5-base, facebook/encodec_32khz (hop 8*5*4*4 = 640; 2048 codes = 11 bits)
        text = T5Config(
            vocab_size=32128,
            d_model=768,
            d_ff=3072,
            d_kv=64,
            num_layers=12,
            num_decoder_layers=12,
            num_heads=12,
            relative_attention_num_buckets=32,
            feed_forward_proj="relu",
        )
        codec = EncodecConfig(
            sampling_rate=32000,
            audio_channels=1,
            target_bandwidths=[2.2],
            codebook_size=2048,
            codebook_dim=128,
            hidden_size=128,
            num_filters=64,
            num_residual_layers=1,
            upsampling_ratios=[8, 5, 4, 4],
            norm_type="weight_norm",
            kernel_size=7,
            last_kernel_size=7,
            residual_kernel_size=3,
            dilation_growth_rate=2,
            use_causal_conv=False,
            pad_mode="reflect",
            compress=2,
            num_lstm_layers=2,
            trim_right_ratio=1.0,
            use_conv_shortcut=False,
            normalize=False,
        )
        decoder = MusicgenDecoderConfig(
            vocab_size=2048,
            num_codebooks=4,
            hidden_size=1024,
            ffn_dim=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            max_position_embeddings=2048,
            pad_token_id=2048,
            bos_token_id=2048,
        )
    assert codec.frame_rate == 50 and codec.num_quantizers == decoder.num_codebooks == 4, "not musicgen-small's codec"
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)


def musicgen_dir(tiny: bool = False) -> str:
    """Build the model with random weights and save it once, with its processor, as a Hub snapshot would be laid out."""
    if tiny not in _dirs:
        from transformers import EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor

        tokenizer = _tokenizer()
        config = _config(tiny, len(tokenizer))
        torch.manual_seed(0)
        model = MusicgenForConditionalGeneration(config).eval()
        with torch.no_grad():
            # A fresh EnCodec has all-zero codebooks, so every code would decode to the same sound and comparing
            # waveforms would prove nothing; random codebooks make the audio depend on the codes.
            for layer in model.audio_encoder.quantizer.layers:
                layer.codebook.embed.normal_()
            # Unit-scale heads give well separated top logits, so argmax never hinges on rounding differences.
            for head in model.decoder.lm_heads:
                head.weight.normal_()
        start = config.decoder.bos_token_id
        model.generation_config.update(
            decoder_start_token_id=start,
            pad_token_id=start,
            do_sample=True,
            guidance_scale=3.0,
            top_k=250,
            max_length=1500,
        )  # musicgen-small's defaults
        path = tempfile.mkdtemp(prefix=f"bench-musicgen-{'tiny' if tiny else 'small'}-")
        model.save_pretrained(path)
        features = EncodecFeatureExtractor(feature_size=1, sampling_rate=config.audio_encoder.sampling_rate)
        MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(path)
        _dirs[tiny] = path
    return _dirs[tiny]


def musicgen(manager: DeviceManager, seconds: float = 10.0, batch: int = 1, tiny: bool = False) -> Workload:
    """`seconds` of music for `batch` copies of one prompt, guidance 3, top_k=1 (the argmax code at every step).

    Both sides make the same number of EnCodec frames, round(seconds * 50). Stock `generate` counts decoder steps,
    and MusicGen's delay pattern spends (codebooks - 1) of them before the last codebook's first code, so the stock
    call asks for frames + 3 new tokens, as aigc's loop runs; `max_new_tokens=frames` would return 60 ms less audio
    after 3 fewer steps. compare: aigc trims near-silent ends and scales peaks above 1 down (`aigc.media.audio.tidy`),
    so each stock waveform gets the same `tidy` and must then have the same length and agree within 1e-4 of its peak.
    The codes themselves are not compared because neither side returns them; with random (non-zero) codebooks,
    different codes give audibly different waveforms, so matching waveforms mean matching codes.
    """
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    import aigc

    path = musicgen_dir(tiny)
    processor = AutoProcessor.from_pretrained(path)
    model = MusicgenForConditionalGeneration.from_pretrained(path, dtype=manager.dtype).to(manager.device).eval()
    frames = max(1, round(seconds * model.config.audio_encoder.frame_rate))
    new_tokens = frames + model.decoder.num_codebooks - 1
    inputs = processor(text=[PROMPT] * batch, padding=True, return_tensors="pt").to(manager.device)

    def stock() -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(**inputs, do_sample=True, top_k=1, guidance_scale=3.0, max_new_tokens=new_tokens)

    def ours() -> list[Audio]:
        assets = aigc.generate(
            "audio",
            PROMPT,
            backend="music",
            model=path,
            duration=seconds,
            top_k=1,
            guidance=3.0,
            seed=0,
            n=batch,
            manager=manager,
        )
        return [asset.data for asset in assets]

    def same(stock_out: torch.Tensor, our_out: list[Audio]) -> bool:
        if len(stock_out) != len(our_out):
            return False
        for wave, clip in zip(stock_out, our_out, strict=True):
            expected = tidy(wave.float().cpu().numpy(), clip.sample_rate).samples
            if expected.shape != clip.samples.shape:
                return False
            peak = max(float(np.abs(expected).max()), 1e-6)
            if float(np.abs(expected - clip.samples).max()) > 1e-4 * peak:
                return False
        return True

    return stock, ours, same

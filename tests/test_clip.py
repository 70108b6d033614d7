"""CLIP and CLAP relevance on tiny random models built here: shapes, range, pairing, gradients, availability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import _tiny_clip_tokenizer, put_in_hub_cache
from PIL import Image

from aigc.errors import ConfigError, ModelLoadError
from aigc.media.audio import Audio
from aigc.scoring.clip import ClapRelevance, ClipRelevance, resample

CLAP_RATE = 8000  # the tiny CLAP's feature extractor: 1 s windows at 8 kHz, 16 mel bins


def build_tiny_clip(path, seed: int = 0):
    """A random CLIP: 2-layer text and vision towers of width 32, 32x32 images in 8x8 patches."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    tokenizer = _tiny_clip_tokenizer()
    text = CLIPTextConfig(
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
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2
    )
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def _tiny_roberta_tokenizer():
    """A byte-level RoBERTa BPE (CLAP's text tokenizer): the specials first, as RoBERTa numbers them, then bytes."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    merges = [("Ġ", "d"), ("o", "g"), ("Ġd", "og")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=64)


def build_tiny_clap(path, seed: int = 0):
    """A random CLAP: a 2-layer RoBERTa and a 2-stage HTSAT (16 mel bins, a 64x64 spectrogram 'image')."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    tokenizer = _tiny_roberta_tokenizer()
    text = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=66,
        projection_dim=16,
    )
    # spec_size 64 over 16 mel bins: freq_ratio 4, so up to 256 frames fit; 1 s at hop 80 gives 101
    audio = ClapAudioConfig(
        num_mel_bins=16,
        spec_size=64,
        window_size=4,
        patch_size=4,
        patch_stride=(4, 4),
        patch_embeds_hidden_size=16,
        hidden_size=32,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        num_hidden_layers=2,
        num_classes=4,
        projection_dim=16,
    )
    torch.manual_seed(seed)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=CLAP_RATE,
        hop_length=80,
        max_length_s=1,
        fft_window_size=256,
        frequency_max=3800,
        truncation="rand_trunc",
        padding="repeatpad",
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory) -> str:
    return str(build_tiny_clap(tmp_path_factory.mktemp("tiny-clap")))


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))  # not square: resize + crop
    red = Image.new("RGB", (32, 32), (220, 30, 30))
    return [noise, red.convert("L")]  # a greyscale image is converted, not refused


def test_clip_similarity_is_pairwise_in_range_and_repeatable(tiny_clip, manager):
    clip = ClipRelevance(tiny_clip, manager)
    images, texts = _images(), ["a cat", "a dog on a red mat"]
    scores = clip.similarity(images, texts)
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(scores, clip.similarity(images, texts))
    swapped = clip.similarity(images, texts[::-1])
    assert not np.allclose(scores, swapped)  # image i is scored with text i, not with every text
    alone = clip.similarity(images[1:], texts[1:])
    np.testing.assert_allclose(alone, scores[1:], atol=1e-5)  # a pair's score does not depend on its batch
    assert manager.stats()["loads"] == 1 and manager.stats()["hits"] >= 3
    assert clip.similarity([], []).shape == (0,)
    with pytest.raises(ConfigError):
        clip.similarity(images, texts[:1])


def test_image_text_score_is_a_raw_cosine(tiny_clip, manager):
    """The gradient path returns the unmapped cosine (in [-1, 1]), so ascent is not stalled by the clip at 0 or 1."""
    clip = ClipRelevance(tiny_clip, manager)
    pixels = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    raw = clip.image_text_score(pixels, "a cat").detach().numpy()
    assert raw.shape == (2,) and np.all(np.abs(raw) <= 1 + 1e-6)


def test_image_text_score_is_differentiable_for_any_size(tiny_clip, manager):
    clip = ClipRelevance(tiny_clip, manager)
    for size in [(64, 64), (20, 48)]:  # down-sized, and up-sized then centre-cropped
        pixels = (torch.rand(2, 3, *size) * 2 - 1).requires_grad_(True)
        score = clip.image_text_score(pixels, "a cat")
        assert score.shape == (2,) and score.requires_grad
        score.sum().backward()
        assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    loaded = manager.stats()["models"]
    assert len(loaded) == 1 and manager.stats()["loads"] == 1


def test_image_text_score_matches_the_pil_path(tiny_clip, manager):
    """A 32x32 image needs no resize, so the tensor path and the processor must agree on the cosine."""
    clip = ClipRelevance(tiny_clip, manager)
    array = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pixels = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1
    raw = clip.image_text_score(pixels, "a cat").detach().numpy()
    expected = np.clip(raw * 2.5, 0, 1)
    np.testing.assert_allclose(clip.similarity([Image.fromarray(array)], ["a cat"]), expected, atol=1e-4)


def test_clip_rejects_bad_pixels(tiny_clip, manager):
    with pytest.raises(ConfigError):
        ClipRelevance(tiny_clip, manager).image_text_score(torch.zeros(3, 32, 32), "a cat")


def test_available_offline(tiny_clip, tiny_clap, tmp_path):
    absent = "nobody-here/clip-that-is-not-cached"
    assert not ClipRelevance.available(absent) and not ClapRelevance.available(absent)
    with pytest.raises(ModelLoadError):
        ClipRelevance(absent, None)
    assert ClipRelevance.available(tiny_clip) and ClapRelevance.available(tiny_clap)
    put_in_hub_cache("test-org/tiny-clip", tiny_clip)
    assert ClipRelevance.available("test-org/tiny-clip")
    assert not ClipRelevance.available(str(tmp_path / "missing-dir"))
    with pytest.raises(ModelLoadError):
        ClipRelevance(str(tmp_path), None)  # a directory without config.json


def test_clip_loads_from_the_hub_cache(tiny_clip, manager):
    put_in_hub_cache("test-org/tiny-clip-cached", tiny_clip)
    cached = ClipRelevance("test-org/tiny-clip-cached", manager).similarity(_images(), ["a cat", "a dog"])
    local = ClipRelevance(tiny_clip, manager).similarity(_images(), ["a cat", "a dog"])
    np.testing.assert_allclose(cached, local, atol=1e-6)


def test_clap_similarity(tiny_clap, manager):
    clap = ClapRelevance(tiny_clap, manager)
    t = np.arange(CLAP_RATE // 2) / CLAP_RATE
    tone = Audio((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), CLAP_RATE)
    noise = Audio(np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 16000).astype(np.float32), 16000)  # long, 16 kHz
    audios, texts = [tone, noise], ["a dog barking", "rain"]
    scores = clap.similarity(audios, texts)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(scores, clap.similarity(audios, texts))  # no random crop of the long clip
    assert not np.allclose(scores, clap.similarity(audios, texts[::-1]))  # pairwise, as for CLIP
    assert manager.stats()["loads"] == 1


def test_resample_linear():
    x = np.sin(np.linspace(0, 2 * np.pi, 100, endpoint=False)).astype(np.float32)
    up = resample(x, 100, 300)
    assert up.shape == (300,) and up.dtype == np.float32
    np.testing.assert_allclose(up[::3], x, atol=1e-6)
    assert resample(x, 100, 100) is not None and resample(x, 100, 50).shape == (50,)


def test_clap_unfused_model_with_a_fusion_extractor_config(tiny_clap, tmp_path, manager):
    """Some saved CLAP configs say truncation='fusion' (four mel channels); an unfused model reads one."""
    import shutil

    from transformers import ClapFeatureExtractor

    shutil.copytree(tiny_clap, tmp_path / "clap", dirs_exist_ok=True)
    extractor = ClapFeatureExtractor.from_pretrained(tmp_path / "clap")
    extractor.truncation = "fusion"
    extractor.save_pretrained(tmp_path / "clap")
    audio = Audio(np.random.default_rng(2).uniform(-0.5, 0.5, CLAP_RATE // 4).astype(np.float32), CLAP_RATE)
    fused_config = ClapRelevance(str(tmp_path / "clap"), manager).similarity([audio], ["rain"])
    plain = ClapRelevance(tiny_clap, manager).similarity([audio], ["rain"])
    assert fused_config.shape == (1,) and np.isfinite(fused_config).all()
    assert 0 <= fused_config[0] <= 1 and plain.shape == (1,)

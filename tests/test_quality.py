"""No-reference quality measures: the orderings the creativity scorer relies on, on inputs made here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import aigc
from aigc.scoring.quality import audio_quality, image_quality, text_repetition

SR = 16000


def procedural_image(seed: int) -> Image.Image:
    """A natural-ish 256 px picture: a colour gradient, antialiased shapes with hard edges and a fine texture."""
    rng = np.random.default_rng(seed)
    size = 512  # drawn at 2x and reduced, so edges are antialiased like a photo's
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.3 + 0.4 * x, 0.35 + 0.3 * y, 0.6 - 0.3 * x * y], axis=-1)
    image = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        cx, cy = rng.integers(40, size - 40, 2).tolist()
        r = int(rng.integers(20, 90))
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=colour)
    texture = 12 * np.sin(2 * np.pi * (x * size / 16 + 0.3 * y * size / 11)) * np.sin(2 * np.pi * y * size / 19)
    pixels = np.clip(np.asarray(image, dtype=np.float32) + texture[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((256, 256), Image.LANCZOS)


def degraded(image: Image.Image, seed: int = 0) -> dict[str, Image.Image]:
    """The failures the scorer must rank below the clean picture."""
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 40.0, pixels.shape)
    white_gain = 255.0 / max(float(np.percentile(pixels, 30)), 1.0)  # >= 70 % of the values burn out
    as_image = lambda a: Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))  # noqa: E731
    return {
        "blurred": image.filter(ImageFilter.GaussianBlur(3)),
        "noisy": as_image(pixels + noise),
        "blank": Image.new("RGB", image.size, (128, 128, 128)),
        "overexposed": as_image(pixels * white_gain),
        "underexposed": as_image(pixels * 0.1),
    }


def assert_clean_beats_every_degradation(images: list[Image.Image]) -> None:
    for i, image in enumerate(images):
        clean = image_quality(image)
        assert all(0.0 <= v <= 1.0 for v in clean.values())
        for name, bad in degraded(image, seed=i).items():
            scores = image_quality(bad)
            assert all(0.0 <= v <= 1.0 for v in scores.values()), (name, scores)
            assert clean["quality"] > scores["quality"], (i, name, clean, scores)


def test_clean_procedural_pictures_beat_blurred_noisy_blank_and_badly_exposed_ones():
    assert_clean_beats_every_degradation([procedural_image(seed) for seed in range(6)])


@pytest.mark.pack
def test_clean_gan_faces_beat_blurred_noisy_blank_and_badly_exposed_ones():
    faces = aigc.generate("image", "face", backend="gan", n=8, seed=1)
    assert_clean_beats_every_degradation([f.data.resize((256, 256), Image.BICUBIC) for f in faces])


def test_each_image_part_responds_to_its_own_failure():
    image = procedural_image(0)
    clean, bad = image_quality(image), {k: image_quality(v) for k, v in degraded(image).items()}
    assert bad["blurred"]["sharpness"] < clean["sharpness"] * 0.5
    assert bad["noisy"]["noise"] < 0.1 < 0.9 < clean["noise"]  # hard edges and texture are not taken for noise
    assert bad["blank"]["contrast"] < 0.01 and bad["blank"]["quality"] < 0.1
    assert bad["overexposed"]["exposure"] < 0.2 and bad["underexposed"]["exposure"] < 0.3 < 0.9 < clean["exposure"]


def test_image_scores_hardly_depend_on_resolution_or_mode():
    image = procedural_image(1)
    reference = image_quality(image)
    for variant in (
        image.resize((512, 512), Image.LANCZOS),
        image.resize((1024, 768), Image.LANCZOS),
        image.convert("RGBA"),
    ):
        scores = image_quality(variant)
        assert all(abs(scores[k] - reference[k]) < 0.1 for k in reference), (variant.size, scores, reference)
    assert image_quality(image) == reference  # deterministic


def tone(dbfs: float = -18.0, seconds: float = 2.0) -> np.ndarray:
    """Speech-like: eight harmonics of a gliding 180 Hz voice under a 4 Hz syllable envelope, at `dbfs` RMS."""
    t = np.arange(int(SR * seconds)) / SR
    phase = 2 * np.pi * np.cumsum(180.0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x**2))).astype(np.float32)


def test_clean_audio_beats_clipped_silent_mostly_silent_and_very_quiet_audio():
    clean = tone()
    mostly_silent = clean.copy()
    mostly_silent[len(clean) // 10 :] = 0.0
    scores = {
        name: audio_quality(x, SR)
        for name, x in {
            "clean": clean,
            "clipped": np.clip(clean * 8, -1.0, 1.0),
            "silent": np.zeros_like(clean),
            "mostly_silent": mostly_silent,
            "quiet": tone(-60.0),
        }.items()
    }
    assert all(0.0 <= v <= 1.0 for s in scores.values() for v in s.values())
    q = {name: s["quality"] for name, s in scores.items()}
    assert q["clean"] > 0.9
    assert q["clean"] > q["clipped"] > q["silent"]
    assert q["clean"] > q["mostly_silent"] and q["clean"] > q["quiet"]
    assert q["silent"] < 0.05 and scores["silent"]["silence"] == 0.0
    assert scores["clipped"]["clipping"] < 0.1 and scores["mostly_silent"]["silence"] == pytest.approx(0.1, abs=0.02)
    assert audio_quality(np.zeros(0), SR)["quality"] == 0.0


def test_audio_accepts_int16_and_stereo_like_float_mono():
    clean = tone()
    reference = audio_quality(clean, SR)
    assert audio_quality((clean * 32767).astype(np.int16), SR) == pytest.approx(reference, abs=1e-3)
    assert audio_quality(np.stack([clean, clean]), SR) == pytest.approx(reference, abs=1e-6)


def test_fluent_text_is_more_distinct_than_a_loop_of_the_same_words():
    fluent = text_repetition(
        "The quick brown fox jumps over the lazy dog while a curious cat watches from the old wooden fence."
    )
    looped = text_repetition("the quick brown fox jumps over the lazy dog " * 6)
    for n in (1, 2, 3):
        assert fluent[f"distinct_{n}"] > looped[f"distinct_{n}"]
    assert fluent["repetition"] < 0.1 < 0.7 < looped["repetition"]
    assert all(0.0 <= v <= 1.0 for v in (*fluent.values(), *looped.values()))
    assert text_repetition("hello world")["distinct_3"] == 1.0 and text_repetition("")["repetition"] == 0.0

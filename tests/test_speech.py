"""Speech: the real Piper voice pack end to end, tiny random VITS models, and audio files with provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

import aigc
from aigc.generators.audio.speech import sentences
from aigc.runtime.devices import DeviceManager

pytestmark = pytest.mark.pack


@pytest.fixture(scope="module")
def voice_manager():
    return DeviceManager("cpu")


def say(text, manager, **kw):
    return aigc.generate("audio", text, manager=manager, **kw)


def test_the_default_voice_speaks_offline(voice_manager):
    clip = say("Welcome to the studio.", voice_manager, seed=1)[0]
    audio = clip.data
    assert clip.backend == "speech" and clip.model == "pack:piper-joe"
    assert audio.sample_rate == 22050 and audio.samples.dtype == np.float32
    assert 0.6 < audio.duration < 4.0  # four words
    assert np.abs(audio.samples).max() <= 1.0
    rms = np.sqrt(np.mean(audio.samples**2))
    assert rms > 0.02  # not silent
    edge = int(0.02 * audio.sample_rate)  # trimmed: the clip starts and ends near the sound, not in long silence
    assert np.abs(audio.samples[: edge * 5]).max() > 0.01 and np.abs(audio.samples[-edge * 5 :]).max() > 0.01


def test_voiced_speech_has_a_human_pitch(voice_manager):
    """The loudest stretch of a vowel-rich phrase has its autocorrelation peak at a speaking pitch (70-300 Hz)."""
    audio = say("Hello, how are you today?", voice_manager, seed=3)[0].data
    rate, x = audio.sample_rate, audio.samples
    frame = int(0.04 * rate)
    energies = [np.sum(x[i : i + frame] ** 2) for i in range(0, len(x) - frame, frame // 2)]
    start = int(np.argmax(energies)) * (frame // 2)
    seg = x[start : start + frame] - x[start : start + frame].mean()
    corr = np.correlate(seg, seg, mode="full")[frame - 1 :]
    low, high = rate // 300, rate // 70
    pitch = rate / (low + int(np.argmax(corr[low:high])))
    assert 70 <= pitch <= 300


def test_duration_grows_with_text_and_speed_shortens_it(voice_manager):
    short = say("Hello there.", voice_manager, seed=1)[0].data.duration
    long = say("Hello there. This sentence is a good deal longer than the first one.", voice_manager, seed=1)[0]
    fast = say("Hello there.", voice_manager, seed=1, speed=2.0)[0].data.duration
    assert long.data.duration > 2 * short and long.info["sentences"] == 2
    assert fast < 0.75 * short


def test_same_seed_same_voice_alone_or_with_others(voice_manager):
    first = say("Welcome to the studio.", voice_manager, seed=7)[0].data.samples
    both = say(["Good night.", "Welcome to the studio."], voice_manager, seed=[1, 7])
    other = say("Welcome to the studio.", voice_manager, seed=8)[0].data.samples
    assert np.array_equal(both[1].data.samples, first)
    assert not np.array_equal(first, other)
    flat = [say("Welcome.", voice_manager, seed=s, variation=0.0)[0].data.samples for s in (1, 2)]
    assert np.array_equal(*flat)  # no variation: the seed no longer matters


def test_long_text_is_split_into_sentences_with_pauses(voice_manager):
    assert sentences("One. Two!  Three?\nFour") == ["One.", "Two!", "Three?", "Four"]
    paused = say("First part. Second part.", voice_manager, seed=1, pause=1.0)[0].data
    tight = say("First part. Second part.", voice_manager, seed=1, pause=0.0)[0].data
    assert paused.duration - tight.duration == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("text", ["!!! ???", "...", "12"[:0] + "   —  "])
def test_unspeakable_text_is_refused_before_loading(text):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match="nothing speakable|is empty"):
        aigc.generate("audio", text, manager=manager)
    assert manager.stats()["loads"] == 0


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(speed=0), "speed=0.0 is out of range"),
        (dict(variation=-1), "variation=-1.0 is out of range"),
        (dict(duration=3.0), "unknown parameter 'duration' for audio generation; allowed: pause, speed, variation"),
    ],
)
def test_bad_speech_knobs_fail_before_loading(params, message):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match=message):
        aigc.generate("audio", "Hello.", manager=manager, **params)
    assert manager.stats()["loads"] == 0


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_audio_files_carry_their_provenance(voice_manager, tmp_path, suffix):
    import soundfile as sf

    clip = say("Welcome to the studio.", voice_manager, seed=4, speed=1.2)[0]
    path = clip.save(tmp_path / f"welcome{suffix}")
    with sf.SoundFile(path) as handle:
        assert handle.samplerate == 22050 and handle.title == "Welcome to the studio."
        assert json.loads(handle.comment)["seed"] == 4
    assert json.loads((tmp_path / "welcome.json").read_text())["params"]["speed"] == 1.2
    loaded = aigc.load(path)
    assert loaded.seed == 4 and loaded.data.sample_rate == 22050
    assert np.abs(loaded.data.samples - clip.data.samples).max() < 1e-4  # 16-bit: within one step
    (tmp_path / f"welcome{suffix}").with_suffix(".json").unlink()
    assert aigc.load(path).params["speed"] == 1.2  # the tags alone are enough


def test_audio_saves_as_wav_flac_or_ogg_only(voice_manager, tmp_path):
    clip = say("Hi there.", voice_manager, seed=1)[0]
    with pytest.raises(aigc.ConfigError, match="saves as .wav, .flac or .ogg"):
        clip.save(tmp_path / "x.mp3")


def test_transformers_vits_models_run_through_the_same_backend(tiny_vits):
    manager = DeviceManager("cpu")
    clips = aigc.generate(
        "audio",
        ["hello there.", "a much longer sentence to say. and another one."],
        model=tiny_vits,
        seed=[3, 4],
        manager=manager,
    )
    assert all(c.data.sample_rate == 16000 and c.info["engine"] == "vits" for c in clips)
    assert clips[1].info["sentences"] == 2
    alone = aigc.generate("audio", "hello there.", model=tiny_vits, seed=3, manager=manager)[0]
    assert np.array_equal(alone.data.samples, clips[0].data.samples)
    slower = aigc.generate("audio", "hello there.", model=tiny_vits, seed=3, speed=0.5, variation=0.0, manager=manager)[
        0
    ]
    faster = aigc.generate("audio", "hello there.", model=tiny_vits, seed=3, speed=2.0, variation=0.0, manager=manager)[
        0
    ]
    assert len(faster.data.samples) < len(slower.data.samples)


def test_vits_from_the_hub_cache_and_bad_model_files(tiny_vits, tmp_path):
    from conftest import put_in_hub_cache

    put_in_hub_cache("tiny-org/tiny-mms-tts", tiny_vits)
    manager = DeviceManager("cpu")
    by_id = aigc.generate("audio", "hello.", model="tiny-org/tiny-mms-tts", seed=1, manager=manager)[0]
    by_dir = aigc.generate("audio", "hello.", model=tiny_vits, seed=1, manager=manager)[0]
    assert np.array_equal(by_id.data.samples, by_dir.data.samples)
    (tmp_path / "voice.bin").write_bytes(b"x")
    with pytest.raises(aigc.ModelLoadError, match="must be a Piper .onnx voice"):
        aigc.generate("audio", "hello.", model=str(tmp_path / "voice.bin"), manager=manager)
    (tmp_path / "lonely.onnx").write_bytes(b"x")
    with pytest.raises(aigc.ModelLoadError, match="needs its Piper config"):
        aigc.generate("audio", "hello.", model=str(tmp_path / "lonely.onnx"), manager=manager)

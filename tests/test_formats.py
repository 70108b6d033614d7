"""aigc.media.formats: every row round-trips real files, survives hostile metadata, and refuses damaged input
clearly."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest
import soundfile as sf
from PIL import ExifTags, Image

import aigc
from aigc.errors import ConfigError, NoMetadataError
from aigc.media import formats
from aigc.media.audio import Audio

HOSTILE = '\n"<x>&amp;\x00😀\u2028'
ALL = sorted(formats.FORMATS)
MEDIA = [name for name in ALL if formats.FORMATS[name].kind != "text"]
AUDIO = [name for name in ALL if formats.FORMATS[name].kind == "audio"]
RTL = "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eevil\u202c"  # Hebrew, Arabic, an RTL override


def make_record(prompt: str = "a castle", **extra) -> dict:
    return {
        "kind": "image",
        "prompt": prompt,
        "seed": 3,
        "model": "m",
        "backend": "diffusion",
        "version": "0.1.0",
        "a1111": {"Negative prompt": "fog", "Steps": 2, "Sampler": "euler", "CFG scale": 7.5},
        **extra,
    }


def tone(seconds: float = 0.5, rate: int = 22050) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def sample(kind: str, lossy: bool = False):
    if kind == "text":
        return "héllo 😀\nsecond line\u2028 & <b>\n"
    if kind == "image":
        if lossy:  # a smooth picture, as JPEG is meant for
            x, y = np.meshgrid(np.arange(48), np.arange(32))
            return Image.fromarray(np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8))
        return Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    return tone()


def save_and_load(name: str, data, record: dict, tmp_path):
    """encode -> a real file -> its bytes -> decode."""
    fmt = formats.by_name(name)
    encoded = formats.encode(fmt, data, record)
    path = tmp_path / f"asset{fmt.suffix}"
    path.write_bytes(encoded.data)
    return encoded, formats.decode(fmt, path.read_bytes(), path.name), path


def assert_same_data(name: str, original, decoded) -> None:
    kind = formats.FORMATS[name].kind
    if kind == "text":
        assert decoded == original
    elif kind == "image":
        assert decoded.mode == "RGB" and decoded.size == original.size
        got, want = np.asarray(decoded, dtype=np.float64), np.asarray(original.convert("RGB"), dtype=np.float64)
        if name == "jpeg":
            assert np.abs(got - want).mean() < 2.0
        else:
            assert np.array_equal(got, want)
    else:
        assert decoded.sample_rate == original.sample_rate and decoded.samples.dtype == np.float32
        assert decoded.samples.shape == original.samples.shape
        if name == "ogg":
            assert np.corrcoef(decoded.samples, original.samples)[0, 1] > 0.99
        else:
            assert np.abs(decoded.samples - original.samples).max() <= 1 / 32768


# --- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_format_round_trips_data_and_record(name, tmp_path):
    fmt = formats.FORMATS[name]
    data, record = sample(fmt.kind, lossy=name == "jpeg"), make_record()
    encoded, decoded, _ = save_and_load(name, data, record, tmp_path)
    assert_same_data(name, data, decoded.data)
    if fmt.kind == "text":
        assert not encoded.embedded and decoded.record is None and fmt.sidecar
    else:
        assert encoded.embedded and decoded.record == record
        assert fmt.sidecar == (fmt.kind == "audio")


@pytest.mark.parametrize("name", MEDIA)
def test_hostile_characters_in_a_small_record_come_back_exactly(name, tmp_path):
    record = make_record(HOSTILE + "\ud800 lone surrogate", nested={"k": [HOSTILE, None, 1.5, True]})
    record["a1111"]["Negative prompt"] = HOSTILE
    encoded, decoded, _ = save_and_load(name, sample(formats.FORMATS[name].kind, name == "jpeg"), record, tmp_path)
    assert encoded.embedded and decoded.record == record


@pytest.mark.parametrize("name", ALL)
def test_a_60k_hostile_prompt_never_breaks_the_file(name, tmp_path):
    fmt = formats.FORMATS[name]
    data, record = sample(fmt.kind, lossy=name == "jpeg"), make_record((HOSTILE + "a castle ") * 4000)
    encoded, decoded, path = save_and_load(name, data, record, tmp_path)
    assert_same_data(name, data, decoded.data)
    assert decoded.record == record if encoded.embedded else decoded.record is None
    if fmt.kind == "audio":  # the old bug: a ~51k record made a WAV that soundfile could not open
        assert sf.info(str(path)).frames == len(data.samples)


@pytest.mark.parametrize("name", MEDIA)
def test_a_megabyte_record(name, tmp_path):
    fmt = formats.FORMATS[name]
    data, record = sample(fmt.kind, lossy=name == "jpeg"), make_record("a castle", blob=HOSTILE * 100_000)
    assert len(json.dumps(record)) > 1_000_000
    encoded, decoded, _ = save_and_load(name, data, record, tmp_path)
    assert_same_data(name, data, decoded.data)
    assert decoded.record == record if encoded.embedded else decoded.record is None
    assert encoded.embedded == (name != "jpeg")  # JPEG's segments are small; WAV's ID3 chunk holds it


def test_tags_too_big_for_jpeg_are_left_out_and_wav_keeps_them_in_id3_only(tmp_path):
    record = make_record("x" * 70_000)
    encoded, decoded, _ = save_and_load("jpeg", sample("image", True), record, tmp_path)
    assert not encoded.embedded and decoded.record is None
    encoded, decoded, path = save_and_load("wav", tone(), record, tmp_path)
    assert encoded.embedded and decoded.record == record
    with sf.SoundFile(str(path)) as handle:  # the INFO comment keeps its 2,000-byte rule
        assert not handle.comment and handle.title == "x" * 200


def test_a_wav_record_over_the_id3_limit_is_left_out(tmp_path):
    record = make_record("a castle", blob="y" * (16 * 1024 * 1024 + 1))
    encoded, decoded, path = save_and_load("wav", tone(0.01), record, tmp_path)
    assert not encoded.embedded and decoded.record is None
    tags = mutagen_wave(path).tags
    assert tags["TIT2"].text == ["a castle"] and not tags.getall("COMM")


# --- other tools read the files ----------------------------------------------------------------------------


def user_comment(image: Image.Image) -> str:
    raw = image.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
    assert raw[:8] == b"UNICODE\x00"
    return raw[8:].decode("utf-16-be")


@pytest.mark.parametrize("name", ["png", "webp", "jpeg"])
def test_pil_reads_the_images_and_their_a1111_parameters(name, tmp_path):
    record = make_record(f"a castle{HOSTILE}")
    _, _, path = save_and_load(name, sample("image", True), record, tmp_path)
    expected = formats.a1111_text(record, 48, 32)
    with Image.open(path) as image:
        assert image.format == ("JPEG" if name == "jpeg" else name.upper()) and image.size == (48, 32)
        assert (image.text["parameters"] if name == "png" else user_comment(image)) == expected
        if name == "png":
            assert json.loads(image.text["aigc"]) == record


@pytest.mark.parametrize("name", ["webp", "jpeg"])
def test_a_long_exif_comment_is_shortened_to_a_valid_prefix(name, tmp_path):
    record = make_record("😀a" * 40_000)
    _, _, path = save_and_load(name, sample("image", True), record, tmp_path)
    with Image.open(path) as image:
        comment = user_comment(image)
    expected = formats.a1111_text(record, 48, 32)
    assert expected.startswith(comment) and (comment == expected) == (name == "webp")


@pytest.mark.parametrize("name", ["wav", "flac", "ogg"])
def test_soundfile_reads_the_audio_and_its_tags(name, tmp_path):
    record = make_record("a bell " + HOSTILE)
    _, _, path = save_and_load(name, tone(), record, tmp_path)
    with sf.SoundFile(str(path)) as handle:
        assert handle.format == name.upper() and handle.channels == 1 and handle.frames == 11025
        assert handle.title == record["prompt"].replace("\x00", "")
        assert handle.software.startswith("aigc 0.1.0")  # libsndfile appends its own name to WAV's
        assert json.loads(handle.comment) == record
    assert sf.info(str(path)).subtype == ("VORBIS" if name == "ogg" else "PCM_16")


def mutagen_wave(path):
    mutagen_wave = pytest.importorskip("mutagen.wave")
    return mutagen_wave.WAVE(str(path))


@pytest.mark.parametrize("prompt", ["a bell", f'a "bell" 😀🎻 {RTL} {HOSTILE}', "🎻" * 300])
def test_mutagen_and_libsndfile_both_read_a_wavs_tags(prompt, tmp_path):
    record = make_record(prompt)
    _, decoded, path = save_and_load("wav", tone(), record, tmp_path)
    assert decoded.record == record
    with sf.SoundFile(str(path)) as handle:  # LIST/INFO, as before
        info_title, info_comment = handle.title, handle.comment
        assert handle.frames == 11025 and json.loads(info_comment) == record
    wave = mutagen_wave(path)  # the id3 chunk
    assert wave.info.length == 0.5 and wave.info.sample_rate == 22050 and wave.tags.version == (2, 4, 0)
    assert wave.tags["TIT2"].text == [info_title] and info_title == prompt.replace("\x00", "")[:200]
    assert wave.tags["TSSE"].text == ["aigc 0.1.0"]
    assert json.loads(wave.tags["COMM::eng"].text[0]) == record
    raw = path.read_bytes()  # the RIFF size covers the id3 chunk exactly; chunks sit at even offsets
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8 and len(raw) % 2 == 0


def test_a_wav_carries_a_record_over_2000_bytes_inside_it(tmp_path):
    prompt = (f'a "bell" 😀 {RTL} ') * 200
    asset = aigc.Asset("audio", tone(), prompt, 7, "speech", "pack:piper-joe", params={"pause": 0.4})
    path = asset.save(tmp_path / "long-prompt.wav")
    (tmp_path / "long-prompt.json").unlink()  # only the file itself is left
    with sf.SoundFile(str(path)) as handle:
        assert not handle.comment  # too long for INFO
    loaded = aigc.load(path)
    assert loaded.prompt == prompt and loaded.seed == 7 and loaded.params == {"pause": 0.4}
    assert json.loads(mutagen_wave(path).tags["COMM::eng"].text[0])["prompt"] == prompt


@pytest.mark.parametrize("version, encoding", [(3, 1), (4, 3), (4, 2), (3, 0)])
def test_a_record_in_an_id3_comment_written_by_mutagen_is_read(version, encoding, tmp_path):
    id3 = pytest.importorskip("mutagen.id3")
    record = make_record("caf\xe9 bell" if encoding == 0 else f"a bell 😀 {RTL}")
    path = tmp_path / "other.wav"
    sf.write(str(path), tone().samples, 22050, subtype="PCM_16")  # no INFO tags
    wave = mutagen_wave(path)
    wave.add_tags()
    wave.tags.add(id3.TIT2(encoding=encoding, text="other title"))
    wave.tags.add(id3.COMM(encoding=encoding, lang="eng", desc="notes", text="not a record"))
    wave.tags.add(id3.COMM(encoding=encoding, lang="eng", desc="aigc", text=json.dumps(record)))
    wave.save(v2_version=version)
    assert formats.decode("wav", path.read_bytes()).record == record


def damaged_id3_chunks(raw: bytes) -> list[tuple[bytes, bool]]:
    """The WAV `raw` with its id3 chunk spoiled in ways that keep the RIFF size consistent, each with whether
    the ID3 comment can still be read."""
    at = raw.index(b"id3 ")
    tag = at + 8

    def resized(data: bytes) -> bytes:
        return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]

    return [
        (raw[:tag] + b"\xff" * (len(raw) - tag), False),  # garbage payload
        (raw[:tag] + b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + raw[tag + 10 :], True),  # claims 256 MiB; frames whole
        (raw[:tag] + b"ID3\x02" + raw[tag + 4 :], False),  # ID3v2.2, which aigc does not read
        (raw[: at + 4] + struct.pack("<I", 2**32 - 2) + raw[tag:], False),  # the chunk claims 4 GiB
        (raw[: at + 4] + struct.pack("<I", 10) + raw[tag:], False),  # the chunk claims 10 bytes: the rest is junk
        (resized(raw[: tag + 40]), False),  # cut mid-frame, and the RIFF size rewritten to match
        (resized(raw[:at]), False),  # no id3 chunk at all
    ]


@pytest.mark.parametrize("prompt", ["a bell", "a bell " * 500])  # a record in INFO too, or in ID3 only
def test_a_damaged_id3_chunk_loses_at_most_the_record_never_the_audio(prompt, tmp_path):
    record = make_record(prompt, kind="audio")
    raw = formats.encode("wav", tone(), record).data
    in_info = len(json.dumps(record, ensure_ascii=False).encode()) <= 2_000
    for i, (bad, readable) in enumerate(damaged_id3_chunks(raw)):
        decoded = formats.decode("wav", bad, "bad.wav")
        assert np.array_equal(decoded.data.samples, formats.decode("wav", raw).data.samples)
        assert decoded.record == (record if in_info or readable else None), i
        path = tmp_path / f"bad{i}.wav"
        path.write_bytes(bad)
        with pytest.raises(NoMetadataError, match="no aigc metadata") if decoded.record is None else nullcontext():
            aigc.load(path)
        (tmp_path / f"bad{i}.json").write_text(json.dumps(record))  # the sidecar has it
        assert aigc.load(path).prompt == prompt
    with pytest.raises(ConfigError, match=r"^cannot load bad\.wav: not a readable audio file \(it is truncated: "):
        formats.decode("wav", raw[: raw.index(b"id3 ") + 30], "bad.wav")  # cut inside the id3 chunk


def test_random_damage_to_the_id3_chunk_is_never_a_traceback():
    record = make_record("a bell " * 500)  # in ID3 only, so its parser always runs
    raw = formats.encode("wav", tone(0.01), record).data
    at, rng, outcomes = raw.index(b"id3 "), np.random.default_rng(0), set()
    for trial in range(1000):
        bad = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):  # mostly the headers, where the sizes are
            bad[int(rng.integers(at, at + 60 if trial % 2 else len(raw)))] = int(rng.integers(256))
        if trial % 3 == 0:
            bad = bad[: int(rng.integers(at, len(bad)))]
            bad[4:8] = struct.pack("<I", len(bad) - 8)
        try:
            decoded = formats.decode("wav", bytes(bad), "bad.wav")
            outcomes.add("record" if decoded.record == record else "none" if decoded.record is None else "changed")
        except ConfigError as error:
            assert str(error).startswith("cannot load bad.wav: ") and "\n" not in str(error)
            outcomes.add("refused")
    assert {"record", "none"} <= outcomes  # some damage misses the record, some spoils it


def test_a1111_text_matches_what_other_tools_parse():
    record = make_record()
    record["a1111"]["Denoising strength"] = 0.5
    record["a1111"]["Clip skip"] = None
    assert formats.a1111_text(record, 64, 64) == (
        "a castle\nNegative prompt: fog\nSteps: 2, Sampler: euler, CFG scale: 7.5, Denoising strength: 0.5, "
        "Seed: 3, Size: 64x64, Model: m, Backend: aigc diffusion, Version: 0.1.0"
    )
    bare = {"prompt": "p", "seed": None, "model": "m", "backend": "b", "version": "v"}
    assert formats.a1111_text(bare, 1, 2) == "p\nSize: 1x2, Model: m, Backend: aigc b, Version: v"


# --- audio edge cases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wav", "flac", "ogg"])
def test_one_sample_works_and_no_samples_is_refused(name, tmp_path):
    one = Audio(np.array([0.25], dtype=np.float32), 22050)
    _, decoded, _ = save_and_load(name, one, make_record(), tmp_path)
    assert decoded.data.samples.shape == (1,) and decoded.data.sample_rate == 22050
    with pytest.raises(ConfigError, match="at least one sample"):
        formats.encode(name, Audio(np.zeros(0, dtype=np.float32), 22050), make_record())


def test_out_of_range_samples_clip_and_rates_the_codec_cannot_store_are_refused():
    loud = Audio(np.array([2.0, -3.0, np.nan, 0.5], dtype=np.float32), 8000)
    decoded = formats.decode("wav", formats.encode("wav", loud, make_record()).data)
    assert np.allclose(decoded.data.samples, [1.0, -1.0, 0.0, 0.5], atol=1 / 32768)
    with pytest.raises(ConfigError, match="384000 Hz"):  # libvorbisenc would crash the process
        formats.encode("ogg", Audio(np.zeros(10, dtype=np.float32), 384_000), make_record())
    with pytest.raises(ConfigError, match="cannot save the audio as FLAC"):
        formats.encode("flac", Audio(np.zeros(10, dtype=np.float32), 1_000_000), make_record())


def test_stereo_files_from_elsewhere_decode_as_mono():
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([np.full(100, 0.5), np.full(100, -0.25)], 1), 8000, format="WAV", subtype="FLOAT")
    decoded = formats.decode("wav", buffer.getvalue())
    assert decoded.data.samples.shape == (100,) and np.allclose(decoded.data.samples, 0.125)
    assert decoded.record is None


def long_signal(seconds: float = 120, rate: int = 22050) -> np.ndarray:
    """A seeded chord under a slow swell with a little noise: sound all the way through, as speech or music is."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(110, 2000, 6)) / 6
    swell = 0.5 + 0.4 * np.sin(2 * np.pi * 0.3 * t)
    return (0.7 * swell * chord + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("name", AUDIO)
def test_two_minutes_of_audio_save_and_load_in_every_audio_format(name, tmp_path):
    # libsndfile 1.2.2's Vorbis encoder segfaulted on one write() of ~2.1M samples; the save runs in a child
    # process, so that a crash fails this test (return code -11, with faulthandler's stack) instead of pytest.
    signal = long_signal()
    assert signal.size > 2_600_000
    np.save(tmp_path / "signal.npy", signal)
    path = tmp_path / f"long{formats.FORMATS[name].suffix}"
    code = (
        "import sys, numpy, aigc; from aigc.media.audio import Audio; clip = Audio(numpy.load(sys.argv[1]), 22050); "
        "aigc.Asset('audio', clip, 'a long hum', 1, 'speech', 'pack:piper-joe').save(sys.argv[2])"
    )
    command = [sys.executable, "-X", "faulthandler", "-c", code, str(tmp_path / "signal.npy"), str(path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"saving 120 s as {name} failed (return code {run.returncode}): {run.stderr[-3000:]}"
    loaded = aigc.load(path)
    assert loaded.prompt == "a long hum" and loaded.data.sample_rate == 22050
    assert_same_data(name, Audio(signal, 22050), loaded.data)  # every sample; exact to 16 bits but for Vorbis
    error = np.sqrt(np.mean((loaded.data.samples - signal) ** 2)) / np.sqrt(np.mean(signal**2))
    assert error < (0.15 if name == "ogg" else 1e-3)


# --- suffixes and names --------------------------------------------------------------------------------------


def test_suffix_rules():
    assert formats.for_path("a.jpeg", "image").name == "jpeg" and formats.for_path("A.JPG", "image").name == "jpeg"
    assert formats.for_path("clip.OGG").name == "ogg" and formats.for_path("x.md", "text").name == "md"
    with pytest.raises(ConfigError, match="an image asset saves as .png, .webp, .jpg or .jpeg, not 'x.bmp'"):
        formats.for_path("x.bmp", "image")
    with pytest.raises(ConfigError, match="a text asset saves as .txt or .md, not 'x.png'"):
        formats.for_path("x.png", "text")
    with pytest.raises(ConfigError, match=r"cannot load x\.bmp: aigc reads \.txt, \.md, \.png, .* or \.ogg files"):
        formats.for_path("x.bmp")
    with pytest.raises(ConfigError, match="unknown file format 'bmp'; aigc knows txt, md, png"):
        formats.by_name("bmp")
    assert formats.by_name("JPG") is formats.FORMATS["jpeg"]
    assert formats.suffixes("image") == [".png", ".webp", ".jpg", ".jpeg"]
    assert {kind: formats.default(kind).name for kind in formats.DEFAULT_FORMAT} == formats.DEFAULT_FORMAT
    with pytest.raises(ConfigError, match="no file format stores 'video' assets"):
        formats.default("video")


def test_the_module_imports_light():
    code = "import sys, aigc.media.formats; print(sorted({'torch', 'PIL', 'soundfile'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- malformed input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MEDIA)
def test_truncated_or_garbage_files_are_clear_config_errors(name):
    fmt = formats.FORMATS[name]
    raw = formats.encode(fmt, sample(fmt.kind, name == "jpeg"), make_record()).data
    damaged = [
        b"",
        b"\x00\x01junk" * 40,
        raw[:12],
        raw[: len(raw) // 4],
        raw[: len(raw) // 2],
        raw[:-1],
        raw[:8] + b"\xff" * (len(raw) - 8),
    ]
    for bad in damaged:
        with pytest.raises(ConfigError, match=r"^cannot load bad\.bin: not a readable (audio file|[A-Z]+) \("):
            formats.decode(fmt, bad, "bad.bin")


def test_text_that_is_not_utf8_and_files_of_another_format_are_refused():
    with pytest.raises(ConfigError, match="^cannot load notes.txt: it is not UTF-8 text"):
        formats.decode("txt", b"caf\xe9", "notes.txt")
    png = formats.encode("png", sample("image"), make_record()).data
    with pytest.raises(ConfigError, match="^cannot load x.jpg: not a readable JPEG"):
        formats.decode("jpeg", png, "x.jpg")
    flac = formats.encode("flac", tone(0.01), make_record()).data
    with pytest.raises(ConfigError, match="^cannot load x.wav: not a readable audio file .*FLAC audio, not WAV"):
        formats.decode("wav", flac, "x.wav")


def test_foreign_metadata_is_ignored_not_trusted():
    image = sample("image")
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>'
    for xmp in (bomb, b"<not xml", b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'):
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", lossless=True, xmp=xmp)
        assert formats.decode("webp", buffer.getvalue()).record is None
    buffer = io.BytesIO()
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("aigc", "[" * 100_000)  # hostile, deeply nested JSON
    image.save(buffer, format="PNG", pnginfo=info)
    assert formats.decode("png", buffer.getvalue()).record is None


def test_wrong_data_types_are_config_errors():
    for name, data in [("txt", b"bytes"), ("png", "text"), ("wav", np.zeros(3))]:
        with pytest.raises(ConfigError, match="holds"):
            formats.encode(name, data, make_record())
    with pytest.raises(ConfigError, match="not JSON-ready"):
        formats.encode("png", sample("image"), {"prompt": "p", "bad": object()})

"""A corpus of hostile and malformed inputs across the front ends: each one refused with one aigc error (never a
traceback, a hang or a runaway read), before any model loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.runtime.devices import DeviceManager

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


@pytest.fixture(scope="module")
def odd(tmp_path_factory, tiny_gpt2):
    """Odd files: a FIFO, a symlink loop, a link to /dev/zero, damaged models, hostile records."""
    root = tmp_path_factory.mktemp("odd")
    os.mkfifo(root / "fifo.txt")
    os.symlink(root / "loop-b", root / "loop-a")
    os.symlink(root / "loop-a", root / "loop-b")
    os.symlink("/dev/zero", root / "zero.txt")
    (root / "random.gguf").write_bytes(os.urandom(64))
    (root / "empty.gguf").write_bytes(b"")
    truncated = root / "truncated-lm"
    shutil.copytree(tiny_gpt2, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 3])
    listed = root / "listed-config"
    listed.mkdir()
    (listed / "config.json").write_text("[1, 2, 3]")
    voice = root / "voice.onnx"
    voice.write_bytes(b"not onnx")
    (root / "voice.onnx.json").write_text("{not json")
    (root / "story.txt").write_text("hello")
    (root / "story.json").write_text(json.dumps({"kind": "text", "prompt": 5, "seed": "abc", "backend": 1}))
    (root / "deep.txt").write_text("hello")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    return root


def refused(call, error=aigc.AIGCError, match: str | None = None) -> None:
    manager = DeviceManager("cpu")
    with pytest.raises(error, match=match):
        call(manager)
    assert manager.stats()["loads"] == 0


@pytest.mark.parametrize(
    "name, call, match",
    [
        ("lone surrogate", lambda m: aigc.generate("text", "\ud800 hi", manager=m), "lone surrogate"),
        ("surrogate speech", lambda m: aigc.generate("audio", "\udfff", manager=m), "lone surrogate"),
        ("manager as text", lambda m: aigc.generate("text", "hi", manager="cpu"), "must be a DeviceManager"),
        ("empty backend", lambda m: aigc.generate("text", "hi", backend="", manager=m), "backend='' is not a text"),
        (
            "empty library",
            lambda m: aigc.generate("image", "x", backend="gan", best_of=2, library="", manager=m),
            "library='' is empty",
        ),
        (
            "NUL in model path",
            lambda m: aigc.generate("image", "x", backend="gan", model="/tmp/a\x00.pth", manager=m),
            "control characters",
        ),
        (
            "huge model path",
            lambda m: aigc.generate("text", "x", model="/tmp/" + "a" * 300 + ".gguf", manager=m),
            "cannot be read as a path|far too long",
        ),
        ("unknown home", lambda m: aigc.generate("text", "x", model="~nosuchuser1234/m", manager=m), "home directory"),
        (
            "to_seed past 2**63",
            lambda m: aigc.generate("image", "x", backend="gan", frames=2, to_seed=2**64, manager=m),
            "to_seed=.* is out of range",
        ),
        (
            "to_seed without frames",
            lambda m: aigc.generate("image", "x", backend="gan", to_seed=3, manager=m),
            "pass frames= too",
        ),
        ("NUL in a string knob", lambda m: aigc.generate("text", "x", stop=["a\x00"], manager=m), "control character"),
        ("NaN budget", lambda m: DeviceManager("cpu", budget="nanGiB"), "must be a size"),
        ("negative budget", lambda m: DeviceManager("cpu", budget="-5GiB"), "must be a size"),
    ],
)
def test_python_calls_refuse_hostile_values(name, call, match):
    refused(call, match=match)


def test_damaged_model_files_are_explained(odd):
    refused(lambda m: aigc.generate("text", "x", model=str(odd / "loop-a"), manager=m), match="path|no such file")
    refused(lambda m: aigc.generate("text", "x", model=str(odd / "random.gguf"), manager=m), match="not a GGUF file")
    refused(lambda m: aigc.generate("text", "x", model=str(odd / "empty.gguf"), manager=m), match="not a GGUF file")
    refused(
        lambda m: aigc.generate("text", "x", model=str(odd / "listed-config"), manager=m), match="not a JSON object"
    )
    refused(lambda m: aigc.generate("audio", "hi", model=str(odd / "voice.onnx"), manager=m), match="not readable JSON")
    manager = DeviceManager("cpu")  # the damage shows only when the weights are read: still one ModelLoadError
    with pytest.raises(aigc.ModelLoadError, match="could not be loaded .*is it complete and undamaged"):
        aigc.generate("text", "x", model=str(odd / "truncated-lm"), manager=manager)


def test_an_oversized_or_bomb_init_image_is_refused_before_loading(tiny_sd, tmp_path):
    from PIL import Image

    Image.new("RGB", (4096, 64)).save(tmp_path / "wide.png")
    refused(
        lambda m: aigc.generate("image", "x", model=tiny_sd, init_image=str(tmp_path / "wide.png"), manager=m),
        match="at most 2048 px a side, so pass width= and height=",
    )
    Image.new("1", (30000, 30000)).save(tmp_path / "bomb.png")  # tiny on disk, 900 megapixels decoded
    refused(
        lambda m: aigc.generate("image", "x", model=tiny_sd, init_image=str(tmp_path / "bomb.png"), manager=m),
        match="far too large to open",
    )
    refused(
        lambda m: aigc.generate("image", "x", model=tiny_sd, width=2048, height=2048, n=100, manager=m),
        match="megapixels",
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: aigc.score([], "x"), "give at least one item"),
        (lambda: aigc.score("abc", "x"), "must be a list"),
        (lambda: aigc.score([""], "x"), "empty text"),
        (lambda: aigc.score([(np.zeros(100, "float32"), 0)], "x"), "0 Hz"),
        (lambda: aigc.score([(np.full(100, np.nan, "float32"), 16000)], "x"), "finite"),
        (lambda: aigc.score([("abc", 16000)], "x"), "must be numbers"),
        (lambda: aigc.score(["x"], "y", weights={"novelty": float("nan")}), "finite numbers"),
        (lambda: aigc.score(["x"], "y", weights={"novelty": 0, "relevance": 0, "quality": 0}), "at least one > 0"),
        (lambda: aigc.score(["x"], "y", weights="abc"), "must be a dict"),
    ],
)
def test_score_refuses_what_has_nothing_to_judge(call, match):
    with pytest.raises(aigc.ConfigError, match=match):
        call()


def test_files_that_are_not_regular_files_or_hold_hostile_records(odd):
    for path in ("fifo.txt", "zero.txt"):  # a FIFO would block a read forever, /dev/zero never end
        with pytest.raises(aigc.ConfigError, match="not a regular file"):
            aigc.load(odd / path)
        with pytest.raises(aigc.ConfigError, match="not a regular file"):
            aigc.batch(odd / path, odd / "out", kind="image")
        with pytest.raises(aigc.ConfigError, match="not a regular file"):
            aigc.run(odd / path)
    with pytest.raises(aigc.ConfigError, match="record is malformed"):
        aigc.load(odd / "story.txt")
    with pytest.raises(aigc.ConfigError, match="not readable JSON"):
        aigc.load(odd / "deep.txt")
    for call in (
        lambda: aigc.load(123),
        lambda: aigc.load("a\x00b.txt"),
        lambda: aigc.run(None),
        lambda: aigc.batch(7, odd / "o", kind="image"),
        lambda: aigc.Asset("text", "x", "p", 1, "lm", "m").save(odd / "a\x00.txt"),
    ):
        with pytest.raises(aigc.ConfigError):
            call()


@pytest.mark.parametrize(
    "call, match",
    [
        (dict(kind="video"), "kind='video' is not supported"),
        (dict(n=10**9), "over the limit of 1,024"),
        (dict(backend="gan", no_such_knob=1), "unknown parameter 'no_such_knob'"),
        (dict(backend="gan", truncation=float("nan")), "finite number"),
        (dict(best_of=0), "best_of=0"),
        (dict(min_score=2.0), "between 0 and 1"),
        (dict(workers=-1), "workers=-1"),
    ],
)
def test_what_a_whole_batch_shares_is_refused_once_up_front(tmp_path, call, match):
    (tmp_path / "p.txt").write_text("a\nb\n")
    with pytest.raises(aigc.AIGCError, match=match):
        aigc.batch(tmp_path / "p.txt", tmp_path / "out", **{"kind": "image", **call})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ("a: &x [1]\nsteps: *x\n", "aliases"),
        ("steps:\n  - name: a\n    kind: text\n    prompt: x\n    n: true\n", "valid integer"),
        (
            "steps:\n  - name: a\n    kind: text\n    prompt: x\n    seed: 1180591620717411303424\n",
            "less than or equal",
        ),
        ("steps:\n  - name: " + "a" * 80 + "\n    kind: text\n    prompt: x\n", "at most 64"),
        ("steps:\n  - name: a\n    kind: text\n    prompt: 5\n", "valid string"),
        ("inputs: {topic: 3}\nsteps:\n  - name: a\n    kind: text\n    prompt: x\n", "valid string"),
        ('steps:\n  - name: a\n    kind: text\n    prompt: "x\\u0001"\n', "control character"),
    ],
)
def test_recipes_refuse_hostile_yaml_with_the_line(tmp_path, text, match):
    from aigc.orchestration.recipes import load_recipe

    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(aigc.ConfigError, match=match):
        load_recipe(tmp_path / "r.yaml")


def test_a_replayed_run_record_cannot_write_outside_its_directory(tiny_gpt2, tmp_path):
    from aigc.orchestration.recipes import replay

    record = {
        "pipeline": {
            "inputs": {},
            "seed": 0,
            "steps": [{"name": "../../escaped", "kind": "text", "prompt": "x", "model": tiny_gpt2, "params": {}}],
        }
    }
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(aigc.ConfigError, match="not a run.json written by"):
        replay(tmp_path / "run.json", tmp_path / "again")
    assert not list(tmp_path.parent.glob("escaped*"))


def test_generated_text_with_control_characters_still_flows_into_the_next_prompt():
    from aigc.checks import printable

    assert printable("a\x00b\x1bc\td\ne") == "a b c\td\ne"


@pytest.mark.parametrize(
    "args, message",
    [
        (("generate", "text", "x", "-p", "seed=5"), "seed is not a backend knob; use --seed"),
        (("generate", "text", "x", "-p", "top_k=1", "-p", "top_k=2"), "top_k is given twice"),
        (("generate", "text", "x", "--format", ""), "unknown file format ''"),
        (("generate", "image", "x", "--format", "wav"), "not an image format"),
        (("generate", "text", "x", "-p", "n=3"), "n is not a backend knob; use -n"),
    ],
)
def test_command_line_oddities_are_explained(args, message):
    done = subprocess.run([AIGC, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode in (1, 2) and message in done.stderr and "Traceback" not in done.stderr

"""None means the default from every front end; checks that need no weights run before any load; the device
manager can be replaced; stop strings cost a constant decode per token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aigc
from aigc.runtime.devices import DeviceManager

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


def text(model, manager, **knobs):
    return aigc.generate("text", "The sea", model=model, seed=4, max_new_tokens=6, manager=manager, **knobs)[0]


def test_an_explicit_none_is_the_default_in_python(tiny_gpt2, manager):
    default = text(tiny_gpt2, manager)
    for knob in ("temperature", "top_p", "top_k", "repetition_penalty", "stop", "chat", "batch_size", "compile"):
        given = text(tiny_gpt2, manager, **{knob: None})
        assert given.data == default.data and given.params == default.params, knob
    assert given.params["temperature"] == 0.7  # recorded as the value that was used
    assert (
        aigc.generate("text", "The sea", model=tiny_gpt2, n=None, seed=4, max_new_tokens=6, manager=manager)[0].data
        == default.data
    )


def test_none_is_the_default_in_batch_rows_and_recipes(tiny_gpt2, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "The sea", "temperature": null, "seed": 4, "n": null}\n')
    (tmp_path / "p.csv").write_text("prompt,temperature,seed\nThe sea,,4\n")
    for name in ("p.jsonl", "p.csv"):
        summary = aigc.batch(tmp_path / name, tmp_path / f"out-{name}", kind="text", model=tiny_gpt2, max_new_tokens=6)
        assert (summary.made, summary.failed) == (1, []), name
        record = json.loads((tmp_path / f"out-{name}" / "manifest.jsonl").read_text())
        assert record["params"]["temperature"] == 0.7 and record["seed"] == 4
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"steps:\n  - name: line\n    kind: text\n    model: {tiny_gpt2}\n    prompt: The sea\n"
        "    seed: 4\n    params: {temperature: null, max_new_tokens: 6}\n"
    )
    assert aigc.run(recipe)["line"][0].params["temperature"] == 0.7


def test_an_empty_value_on_the_command_line_is_the_default(tiny_gpt2):
    args = ("generate", "text", "The sea", "--model", tiny_gpt2, "--seed", "4", "--max-new-tokens", "6")
    plain = subprocess.run([AIGC, *args], capture_output=True, text=True, timeout=300)
    empty = subprocess.run([AIGC, *args, "-p", "temperature="], capture_output=True, text=True, timeout=300)
    assert plain.returncode == empty.returncode == 0, empty.stderr
    assert plain.stdout == empty.stdout


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(chat=True), "has no chat template; use chat=False"),
        (dict(compile=True, streamer=print, prompt=["a", "b"]), "streamer= streams one output"),
    ],
)
def test_text_checks_that_need_no_weights_run_before_loading(tiny_gpt2, call, message):
    manager = DeviceManager("cpu")
    prompt = call.pop("prompt", "The sea")
    with pytest.raises(aigc.ConfigError, match=message):
        aigc.generate("text", prompt, model=tiny_gpt2, manager=manager, **call)
    assert manager.stats()["loads"] == 0


def test_a_check_that_needs_the_model_says_so(tiny_gpt2, manager):
    with pytest.raises(aigc.ConfigError, match=r"counted by the model's tokenizer, once loaded.*reads at most 128"):
        aigc.generate("text", "word " * 200, model=tiny_gpt2, manager=manager)


def test_music_and_speech_checks_run_before_loading(tiny_musicgen, tiny_vits):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match=r"duration=3.0 needs 152 decoder steps.*at most 128"):
        aigc.generate("audio", "lofi beat", model=tiny_musicgen, duration=3.0, manager=manager)
    with pytest.raises(aigc.ConfigError, match="nothing speakable"):
        aigc.generate("audio", "ÆØÅ ßüñ", model=tiny_vits, manager=manager)  # no letter this voice knows
    with pytest.raises(aigc.ConfigError, match="refine= and frames= do not combine"):
        aigc.generate("image", "x", backend="gan", frames=3, refine=2, manager=manager)
    assert manager.stats()["loads"] == 0


def test_diffusion_checks_run_before_loading(tiny_sd, tmp_path):
    manager = DeviceManager("cpu")
    (tmp_path / "not-an-image.png").write_bytes(b"nope")
    with pytest.raises(aigc.ConfigError, match="is not a readable image"):
        aigc.generate("image", "x", model=tiny_sd, init_image=str(tmp_path / "not-an-image.png"), manager=manager)
    from PIL import Image

    with pytest.raises(aigc.ConfigError, match="at least 64x64"):
        aigc.generate("image", "x", model=tiny_sd, init_image=Image.new("RGB", (32, 32)), manager=manager)
    assert manager.stats()["loads"] == 0


def test_configure_replaces_the_manager_for_the_scorer_too(tmp_path):
    import torch

    from aigc.runtime import devices
    from aigc.scoring.scorer import default_scorer

    old = devices.get_manager()
    with old.use(old.key("test", "a-model"), lambda: torch.nn.Linear(2, 2)):
        pass
    before = default_scorer()
    new = devices.configure("cpu")
    assert old.stats()["models"] == []  # the old manager let go of its models
    assert default_scorer().manager is new and default_scorer() is not before
    loads = old.stats()["loads"]
    aigc.score(["A short text about the sea."], "the sea")
    assert new.stats()["loads"] > 0 and old.stats()["loads"] == loads  # the scorer loaded through the new one


def test_stop_strings_decode_each_token_a_constant_number_of_times(tiny_gpt2, manager):
    """Looking for stop strings used to re-decode the whole row at every token: quadratic in its length."""
    text(tiny_gpt2, manager)  # load it
    with manager.use(manager.key("causal-lm", tiny_gpt2), lambda: None) as lm:
        decode = lm.tokenizer.decode
        seen: list[int] = []
        lm.tokenizer.decode = lambda ids, **kw: (seen.append(len(ids)), decode(ids, **kw))[1]
        try:
            out = aigc.generate(
                "text",
                "The sea",
                model=tiny_gpt2,
                seed=1,
                max_new_tokens=100,
                top_k=0,
                top_p=1.0,
                temperature=1.5,
                repetition_penalty=1.0,
                stop=["never-there"],
                manager=manager,
            )[0]
        finally:
            del lm.tokenizer.decode
    tokens = out.info["new_tokens"]
    assert tokens == 100 and out.info["finish_reason"] == "length"
    assert sum(seen) <= 4 * tokens + tokens  # two small decodes per token, one full one at the end (was ~n*n/2)

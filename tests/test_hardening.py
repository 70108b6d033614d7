"""Issue 14's defects, each refused in one clear line before any model loads, or handled without loss."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.runtime.devices import DeviceManager

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIGC, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})}
    )


def one_line_error(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("run directory:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert message in lines[0], lines[0]


# --- unbounded work ---------------------------------------------------------------------------------------------
def test_a_billion_outputs_is_refused_at_once_with_the_limit_and_how_to_raise_it():
    manager = DeviceManager("cpu")
    start = time.perf_counter()
    with pytest.raises(aigc.ConfigError, match=r"is 1,000,000,000, over the limit of 1,024.*AIGC_LIMIT_OUTPUTS="):
        aigc.generate("image", "portrait", n=1_000_000_000, manager=manager)
    assert time.perf_counter() - start < 5 and manager.stats()["loads"] == 0
    one_line_error(cli("generate", "image", "portrait", "-n", "1000000000"), "over the limit of 1,024")


def test_limits_can_be_raised_explicitly(tiny_dcgan, manager):
    with pytest.raises(aigc.ConfigError, match="best_of is 300, over the limit of 256"):
        aigc.generate("image", "x", backend="gan", model=tiny_dcgan, best_of=300, manager=manager)
    with aigc.limits.set(outputs=2000):
        assert (
            len(aigc.generate("image", "x", backend="gan", model=tiny_dcgan, n=1100, seed=1, manager=manager)) == 1100
        )
    with pytest.raises(aigc.ConfigError, match="over the limit of 1,024"):
        aigc.generate("image", "x", backend="gan", model=tiny_dcgan, n=1100, manager=manager)  # back to the default
    done = cli(
        "generate",
        "image",
        "x",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "1100",
        "--json",
        env={"AIGC_LIMIT_OUTPUTS": "2000"},
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1100


def test_a_huge_batch_row_and_a_huge_speech_prompt_are_refused(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,n\na face,100000000\nanother face,2\n")
    summary = aigc.batch(tmp_path / "p.csv", tmp_path / "out", kind="image", backend="gan", seed=1)
    assert summary.made == 2 and "this row's n (variants) is 100,000,000" in summary.failed[0]["reason"]
    manager = DeviceManager("cpu")
    with pytest.raises(
        aigc.ConfigError,
        match=r"length in characters \(audio/speech\) is 100,000, over the limit "
        r"of 10,000",
    ):
        aigc.generate("audio", "word " * 20_000, manager=manager)
    with pytest.raises(aigc.ConfigError, match="megapixels"):
        aigc.generate("image", "x", backend="gan", size=4096, n=64, manager=manager)
    assert manager.stats()["loads"] == 0


# --- templates ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt", ["Hello {}", "Hello {", "Hello }", "{topic:>900000000}", "{0}", "{topic!r}", "{a.b}"]
)
def test_recipe_prompts_are_plain_placeholders_only(tmp_path, prompt):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs: {{topic: x}}\nsteps:\n  - name: a\n    kind: text\n    prompt: '{prompt}'\n")
    from aigc.orchestration.recipes import load_recipe

    with pytest.raises(aigc.ConfigError, match=r"r.yaml:5: steps.0.prompt: .*stray or malformed brace"):
        load_recipe(recipe)


def test_braces_can_still_be_written_and_values_are_not_parsed(tiny_gpt2, manager):
    from aigc.orchestration.templates import render

    assert render("{{json}} about {topic}", {"topic": "{evil:>9}"}) == "{json} about {evil:>9}"
    produced = aigc.chain(
        aigc.Step("a", "text", "A {{braced}} {topic}", model=tiny_gpt2, params={"max_new_tokens": 2}),
        topic="{0}",
        manager=manager,
    )
    assert produced["a"][0].prompt == "A {braced} {0}"


# --- values -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "knob, value",
    [
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("top_p", float("-inf")),
        ("repetition_penalty", float("nan")),
    ],
)
def test_nan_and_infinities_are_refused_for_every_float_knob(knob, value):
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ConfigError, match="must be a finite number"):
        aigc.generate("text", "x", manager=manager, **{knob: value})
    with pytest.raises(aigc.ConfigError, match="finite|between 0 and 1"):
        aigc.generate("text", "x", best_of=2, min_score=float("nan"), manager=manager)
    assert manager.stats()["loads"] == 0


def test_batch_files_keep_their_prompts_and_refuse_bad_values(tiny_gpt2, tmp_path):
    (tmp_path / "p.csv").write_bytes("\ufeffprompt,seed\n1984,1\ntrue,2\nnull,3\n".encode("utf-8"))
    summary = aigc.batch(tmp_path / "p.csv", tmp_path / "a", kind="text", model=tiny_gpt2, max_new_tokens=2)
    records = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert summary.made == 3 and sorted(r["prompt"] for r in records) == ["1984", "null", "true"]
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "ok", "seed": "abc"}\n{"prompt": "ok", "seed": 1.5}\n'
        '{"prompt": "a\\u0000b"}\n{"prompt": 1984}\n{"prompt": "fine"}\n'
    )
    summary = aigc.batch(tmp_path / "p.jsonl", tmp_path / "b", kind="text", model=tiny_gpt2, max_new_tokens=2)
    reasons = [f["reason"] for f in summary.failed]
    assert summary.made == 1 and len(reasons) == 4
    assert "seed='abc' must be a whole number" in reasons[0] and "seed=1.5 must be a whole number" in reasons[1]
    assert "control character '\\x00'" in reasons[2] and "prompt must be text, not int" in reasons[3]


def test_an_empty_prompts_file_and_a_batch_where_every_row_failed_are_errors(tiny_gpt2, tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    with pytest.raises(aigc.ConfigError, match="holds no prompts"):
        aigc.batch(tmp_path / "empty.txt", tmp_path / "o", kind="text")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "temperature": -1}\n')
    done = cli(
        "batch", str(tmp_path / "bad.jsonl"), "--kind", "text", "--model", tiny_gpt2, "--out", str(tmp_path / "o")
    )
    assert done.returncode == 1 and "made 0, skipped 0 already done, failed 1" in done.stdout


def test_a_string_knob_stays_a_string_on_the_command_line(tiny_gpt2):
    from aigc.generators.text.causal_lm import CausalLMGenerator

    assert CausalLMGenerator.parse_knobs({"system": "1", "stop": "1"}) == {"system": "1", "stop": "1"}
    done = cli("generate", "text", "Hi", "--model", tiny_gpt2, "-p", "stop=1", "--max-new-tokens", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"]["stop"] == ["1"]
    refused = cli("generate", "text", "Hi", "--model", tiny_gpt2, "-p", "system=1")  # a model without chat
    one_line_error(refused, "system= is a chat model's system message")


# --- files and folders ----------------------------------------------------------------------------------------------
def test_outputs_that_are_files_and_libraries_that_are_files_are_explained(tmp_path):
    (tmp_path / "p.txt").write_text("x\n")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(aigc.ConfigError, match="is a file; pass a directory"):
        aigc.batch(tmp_path / "p.txt", tmp_path / "a-file", kind="image")
    with pytest.raises(aigc.ConfigError, match="is a file; a library is a directory"):
        aigc.Library(tmp_path / "a-file")
    one_line_error(cli("generate", "image", "x", "--out", str(tmp_path / "a-file")), "is a file; pass a directory")


def test_pickled_weights_are_refused_in_one_line(tiny_gpt2, tiny_dcgan, tmp_path):
    import torch

    lm = tmp_path / "pickled-lm"
    shutil.copytree(tiny_gpt2, lm)
    (lm / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, lm / "pytorch_model.bin")
    manager = DeviceManager("cpu")
    with pytest.raises(aigc.ModelLoadError, match=r"weights are pickles \(pytorch_model.bin\).*refuses them"):
        aigc.generate("text", "x", model=str(lm), manager=manager)
    torch.save(
        {"netG_state_dict": {"main.0.weight": torch.ones(1)}, "extra": np.random.default_rng(0)},
        tmp_path / "needs-code.pth",
    )
    done = cli("generate", "image", "x", "--backend", "gan", "--model", str(tmp_path / "needs-code.pth"))
    one_line_error(done, "it is a pickle that needs code to load")
    assert "weights_only=False" not in done.stderr  # never the advice to run the pickle


def test_a_manifest_with_hostile_lines_neither_crashes_nor_injects_markup(tiny_dcgan, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    hostile = [
        {"row": "x", "variant": 0, "file": "a.png"},
        {"row": 1, "variant": 0, "file": "../../etc/passwd"},
        {
            "row": 9,
            "variant": 0,
            "file": "javascript:alert(1)",
            "kind": "image",
            "seed": "<script>x</script>",
            "prompt": "p",
        },
    ]
    (out / "manifest.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hostile) + '{"row": 2, "va')
    (out / "javascript:alert(1)").write_bytes(b"not really")
    (tmp_path / "p.txt").write_text("a face\n")
    summary = aigc.batch(tmp_path / "p.txt", out, kind="image", backend="gan", model=tiny_dcgan, seed=1)
    assert summary.made == 1 and summary.malformed == 3
    page = (out / "index.html").read_text()
    assert "<script>x</script>" not in page and 'href="javascript:' not in page and "&lt;script&gt;" in page


def test_saved_files_respect_the_umask(tiny_dcgan, tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "p.txt").write_text("x\n")
        aigc.batch(tmp_path / "p.txt", tmp_path / "out", kind="image", backend="gan", model=tiny_dcgan, seed=1)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")}
    assert set(modes.values()) == {0o644}, modes  # assets, index.html, manifest and contact sheets alike


def test_a_very_long_record_still_gives_files_that_read_back(tmp_path):
    from aigc.media.audio import Audio

    tone = Audio((0.3 * np.sin(np.arange(2205) / 7)).astype(np.float32), 22050)
    prompt = "a long prompt " * 4000  # ~56k characters: this once made a WAV nobody could open
    for suffix in (".wav", ".flac", ".ogg"):
        asset = aigc.Asset("audio", tone, prompt, 1, "speech", "m")
        loaded = aigc.load(asset.save(tmp_path / f"long{suffix}"))
        assert loaded.prompt == prompt and len(loaded.data.samples) == 2205
        import soundfile as sf

        assert sf.info(str(tmp_path / f"long{suffix}")).frames == 2205  # other tools read it too


# --- misleading or slow errors ----------------------------------------------------------------------------------------
def test_an_unreachable_hub_fails_fast_with_the_same_advice(tmp_path):
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9
    start = time.perf_counter()
    done = cli("generate", "text", "hi", "--model", "some-org/some-model", env=env)
    one_line_error(done, "the Hub cannot be reached from here")
    assert "hf download some-org/some-model" in done.stderr and time.perf_counter() - start < 30


def test_score_explains_foreign_files_and_scores_them_with_a_prompt(tmp_path):
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")
    one_line_error(cli("score", str(tmp_path / "notes.pdf")), "aigc reads .txt, .md, .png")
    (tmp_path / "poem.txt").write_text("The sea is wide and grey tonight.")
    one_line_error(cli("score", str(tmp_path / "poem.txt")), "pass --prompt")
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    done = cli("score", str(tmp_path / "poem.txt"), str(tmp_path / "red.png"), "--prompt", "the sea", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["file"] for line in done.stdout.splitlines()] == [
        str(tmp_path / "poem.txt"),
        str(tmp_path / "red.png"),
    ]


def test_workflow_bookkeeping_grows_linearly_with_the_steps(tiny_gpt2, monkeypatch, manager):
    from aigc.runtime import registry

    def calls_for(count: int) -> int:
        counted = [0]
        real = registry.get

        def counting(*args, **kwargs):
            counted[0] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(registry, "get", counting)
        steps = [
            aigc.Step(
                f"s{i}", "text", "x" if i == 0 else f"{{s{i - 1}}}", model=tiny_gpt2, params={"max_new_tokens": 1}
            )
            for i in range(count)
        ]
        aigc.chain(*steps, manager=manager)
        monkeypatch.setattr(registry, "get", real)
        return counted[0]

    small, large = calls_for(5), calls_for(20)
    assert large <= 4 * small + 4  # was steps x steps: 20 steps looked the registry up ~16x as often as 5

"""Long work shows progress: which model is loading, tokens, steps, a workflow's steps, a batch's assets, the
scorer's passes; bars on a terminal (a real pseudo-terminal here), a line per stage anywhere else, and the same
stages to a Python caller's callback."""

from __future__ import annotations

import io
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aigc
from aigc import console
from aigc.console import Console
from aigc.records import Progress
from aigc.runtime.devices import DeviceManager

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The command with every stage's line at once (tiny models finish stages faster than the 0.5 s default)."""
    done = subprocess.run(
        [AIGC, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "AIGC_PROGRESS_DELAY": "0"},
    )
    assert done.returncode == 0, done.stderr
    return done


def lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("aigc: ")]


def test_a_python_caller_hears_the_model_load_then_each_token(tiny_gpt2):
    heard: list[Progress] = []
    manager = DeviceManager("cpu")
    aigc.generate("text", "The sea", model=tiny_gpt2, seed=1, max_new_tokens=5, manager=manager, progress=heard.append)
    stages = [(p.stage, p.step, p.total) for p in heard]
    assert heard[0] == Progress("load", 0, 1, Path(tiny_gpt2).name)  # a local model by its name, not its folders
    assert ("load", 1, 1) in stages and ("decode", 5, 5) in stages
    assert stages.index(("load", 1, 1)) < stages.index(("decode", 1, 5))
    heard.clear()
    aigc.generate("text", "The sea", model=tiny_gpt2, seed=2, max_new_tokens=3, manager=manager, progress=heard.append)
    assert "load" not in {p.stage for p in heard}  # loaded once: the second call only decodes
    heard.clear()
    aigc.generate("text", "x", model=tiny_gpt2, max_new_tokens=2, manager=manager, progress=False)
    assert not heard


def test_off_a_terminal_each_stage_is_one_line_and_a_long_one_says_when_it_ended(monkeypatch):
    monkeypatch.setattr(console, "SLOW_S", 0.0)
    monkeypatch.setattr(console, "HEARTBEAT_S", 0.0)
    monkeypatch.setenv("AIGC_PROGRESS_DELAY", "0")
    out = io.StringIO()
    with Console(out, live=False) as shown:
        for event in (
            Progress("load", 0, 1, "pack:smollm2"),
            Progress("load", 1, 1, "pack:smollm2"),
            Progress("decode", 1, 3),
            Progress("decode", 2, 3),
            Progress("decode", 3, 3),
            Progress("batch", 0, 0),
            Progress("workflow", 0, 2, "story"),
        ):
            shown(event)
    said = out.getvalue().splitlines()
    assert said[0] == "aigc: loading pack:smollm2" and said[1].startswith("aigc: loading pack:smollm2 done in ")
    assert said[2] == "aigc: decode 1/3 tokens" and said[3].startswith("aigc: decode 2/3 tokens (")  # a heartbeat
    assert said[4].startswith("aigc: decode 3/3 tokens done in ")
    assert said[5] == "aigc: workflow story 0/2 steps" and len(said) == 6  # nothing to do (0 of 0): nothing said


def test_a_stage_gets_its_line_only_once_it_has_run_a_moment(monkeypatch):
    """A stage over before the delay says nothing (a damaged model's load leaves only its one-line error); one
    still running then is announced, by a timer, without waiting for its next report."""
    import time

    out = io.StringIO()
    monkeypatch.setenv("AIGC_PROGRESS_DELAY", "30")
    with Console(out, live=False) as shown:
        shown(Progress("load", 0, 1, "quick"))
        shown(Progress("load", 1, 1, "quick"))
        shown(Progress("load", 0, 1, "broken"))  # then the work fails: close() ends it
    assert out.getvalue() == ""
    monkeypatch.setenv("AIGC_PROGRESS_DELAY", "0.05")
    with Console(out, live=False) as shown:
        shown(Progress("load", 0, 1, "pack:smollm2"))
        for _ in range(200):
            if out.getvalue():
                break
            time.sleep(0.05)
    assert out.getvalue() == "aigc: loading pack:smollm2\n"


def test_the_command_line_says_what_it_is_doing_when_stderr_is_not_a_terminal(tiny_gpt2, tiny_dcgan, tmp_path):
    said = lines(run("generate", "text", "The sea", "--model", tiny_gpt2, "--max-new-tokens", "4").stderr)
    assert said[0] == f"aigc: loading {Path(tiny_gpt2).name}" and "aigc: decode 1/4 tokens" in said

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"steps:\n  - name: idea\n    kind: text\n    model: {tiny_gpt2}\n    prompt: The sea\n"
        f"    params: {{max_new_tokens: 3}}\n  - name: face\n    kind: image\n    backend: gan\n"
        f"    model: {tiny_dcgan}\n    prompt: '{{idea}}'\n"
    )
    said = lines(run("run", str(recipe), "--out", str(tmp_path / "run"), "--seed", "1").stderr)
    assert "aigc: workflow idea 0/2 steps" in said and "aigc: workflow face 1/2 steps" in said

    (tmp_path / "p.txt").write_text("a face\nanother face\n")
    said = lines(
        run(
            "batch",
            str(tmp_path / "p.txt"),
            "--kind",
            "text",
            "--model",
            tiny_gpt2,
            "--best-of",
            "2",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "b"),
            "--seed",
            "1",
        ).stderr
    )
    assert "aigc: batch 0/2 assets" in said and any(line.startswith("aigc: search best of 2") for line in said)
    assert any(line.startswith("aigc: score 2 texts") for line in said)

    run("generate", "image", "a face", "--backend", "gan", "--model", tiny_dcgan, "-n", "3", "--out", str(tmp_path))
    said = lines(run("score", *map(str, tmp_path.glob("image-*.png"))).stderr)
    assert "aigc: loading pack:efficientnet-lite0" in said and "aigc: score 3 images 0/4 parts" in said


def test_on_a_terminal_the_command_line_draws_bars_and_clears_them(tiny_gpt2):
    """stderr is a real pseudo-terminal: the rows (the model loading, the tokens) are drawn, then cleared, and
    the text still goes to stdout alone."""
    primary, secondary = pty.openpty()
    child = subprocess.Popen(
        [AIGC, "generate", "text", "The sea", "--model", tiny_gpt2, "--max-new-tokens", "40", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=False,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(secondary)
    drawn = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    stdout = child.stdout.read()
    assert child.wait(timeout=60) == 0
    os.close(primary)
    screen = drawn.decode("utf-8", "replace")
    assert f"loading {Path(tiny_gpt2).name}" in screen and "decode" in screen and "tokens" in screen, screen[-2000:]
    assert "aigc: " not in screen  # bars, not log lines
    assert b"decode" not in stdout and stdout.strip()  # the text alone on stdout


@pytest.mark.pack
def test_a_first_call_explains_the_one_time_gguf_conversion(tmp_path):
    """The embedded model's first call converts its GGUF file (~25 s): the line says so, not a silent wait."""
    env = {**os.environ, "AIGC_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [AIGC, "generate", "text", "Hi", "--max-new-tokens", "2"], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    assert any(
        line.startswith("aigc: loading pack:smollm2: converting its GGUF file once (about 25 s")
        for line in lines(done.stderr)
    ), done.stderr
    assert "Converting and de-quantizing" not in done.stderr  # the library's own bar gives way to aigc's line

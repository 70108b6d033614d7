"""The `aigc` command through its installed entry point: help, generate, save, stream, errors, models, doctor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([AIGC, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_help_reads_like_a_guide_and_does_not_load_torch():
    top = run("--help").stdout
    for word in ("generate", "models", "doctor", "Examples:"):
        assert word in top
    sub = run("generate", "--help").stdout
    for option in ("--model", "--seed", "-n", "--max-new-tokens", "--out", "--json", "--stream"):
        assert option in sub


def test_generate_json_records_are_reproducible(tiny_gpt2):
    args = (
        "generate",
        "text",
        "The sea",
        "--model",
        tiny_gpt2,
        "--seed",
        "3",
        "-n",
        "2",
        "--max-new-tokens",
        "5",
        "--json",
    )
    first = [json.loads(line) for line in run(*args).stdout.splitlines()]
    second = [json.loads(line) for line in run(*args).stdout.splitlines()]
    assert [r["seed"] for r in first] == [3, 4]
    assert [r["data"] for r in first] == [r["data"] for r in second]
    assert first[0]["params"]["max_new_tokens"] == 5 and first[0]["model"] == Path(tiny_gpt2).name  # not its folders


def test_out_saves_text_with_metadata_and_never_overwrites(tiny_gpt2, tmp_path):
    args = (
        "generate",
        "text",
        "The sea",
        "--model",
        tiny_gpt2,
        "--seed",
        "3",
        "--max-new-tokens",
        "5",
        "--out",
        str(tmp_path),
    )
    printed = run(*args).stdout.strip()
    run(*args)
    texts = sorted(tmp_path.glob("*.txt"))
    assert [p.name for p in texts] == ["text-the-sea-3-1.txt", "text-the-sea-3.txt"]
    assert texts[1].read_text().strip() == printed
    assert json.loads(texts[1].with_suffix(".json").read_text())["seed"] == 3


def test_several_texts_are_told_apart_on_stdout(tiny_gpt2):
    args = ("generate", "text", "The sea", "--model", tiny_gpt2, "--seed", "3", "-n", "3", "--max-new-tokens", "5")
    printed = run(*args).stdout
    records = [json.loads(line) for line in run(*args, "--json").stdout.splitlines()]
    expected = "\n".join(f"--- {i + 1} of 3, seed {r['seed']} ---\n{r['data']}\n" for i, r in enumerate(records))
    assert printed == expected  # a header line before each text, a blank line between: a pipe can split them


def test_stream_prints_the_same_text_as_a_plain_run(tiny_gpt2):
    args = ("generate", "text", "The sea", "--model", tiny_gpt2, "--seed", "9", "--max-new-tokens", "8")
    assert run(*args, "--stream").stdout == run(*args).stdout


def test_knobs_pass_through_param(tiny_gpt2):
    greedy = run(
        "generate", "text", "The sea", "--model", tiny_gpt2, "--temperature", "0", "--max-new-tokens", "6"
    ).stdout
    via_param = run(
        "generate",
        "text",
        "The sea",
        "--model",
        tiny_gpt2,
        "-p",
        "temperature=0",
        "-p",
        "top_k=3",
        "--max-new-tokens",
        "6",
        "--seed",
        "99",
    ).stdout
    assert greedy == via_param


@pytest.mark.parametrize(
    "args, message",
    [
        (("generate", "text", " "), "error: prompt=' ' is empty"),
        (("generate", "text", "hi", "--temperature", "-2"), "error: temperature=-2.0 is out of range"),
        (("generate", "text", "hi", "-p", "tempreature=1"), "error: unknown parameter 'tempreature'"),
        (
            ("generate", "text", "hi", "--model", "openai-community/gpt2"),
            "error: model='openai-community/gpt2' is not available offline",
        ),
        (("generate", "text", "hi", "--device", "cuda"), "error: device='cuda' was asked for"),
        (("generate", "audio", "hi", "--compile"), "error: unknown parameter 'compile'"),
    ],
)
def test_errors_are_one_clean_line(args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    result = run(*args, ok=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_models_and_doctor_describe_this_machine(tiny_gpt2):
    from conftest import put_in_hub_cache

    put_in_hub_cache("tiny-org/listed-gpt2", tiny_gpt2)
    models = run("models").stdout
    assert "pack:smollm2" in models and "pack:gan-faces" in models and "gpt2" in models
    assert "tiny-org/listed-gpt2" in models  # downloaded Hub models are listed too
    doctor = run("doctor").stdout
    for fact in ("torch", "device", "dtype", "offline", "packs"):
        assert fact in doctor


def test_generate_images_writes_pngs_and_a_contact_sheet(tiny_dcgan, tmp_path):
    result = run(
        "generate",
        "image",
        "a face",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "3",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
    )
    printed = result.stdout.split()
    assert [Path(p).name for p in printed] == [
        "image-a-face-5.png",
        "image-a-face-6.png",
        "image-a-face-7.png",
        "contact-sheet-a-face.png",
    ]
    from PIL import Image

    with Image.open(tmp_path / "image-a-face-6.png") as image:
        assert json.loads(image.text["aigc"])["seed"] == 6


def test_score_files_and_best_of_on_the_command_line(tiny_dcgan, tiny_gpt2, tmp_path):
    run(
        "generate",
        "image",
        "a face",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "2",
        "--seed",
        "1",
        "--out",
        str(tmp_path),
    )
    pngs = sorted(str(p) for p in tmp_path.glob("image-*.png"))
    records = [json.loads(line) for line in run("score", *pngs, "--prompt", "a face", "--json").stdout.splitlines()]
    assert [r["file"] for r in records] == pngs and all(0 <= r["score"] <= 1 for r in records)
    plain = run("score", *pngs).stdout.splitlines()
    assert len(plain) == 2 and "relevance" in plain[0]
    best = run(
        "generate",
        "text",
        "The sea",
        "--model",
        tiny_gpt2,
        "--best-of",
        "3",
        "--seed",
        "2",
        "--max-new-tokens",
        "5",
        "--no-library",
    )
    assert best.stdout.startswith("--- 1 of 1, seed ") and "rank 1 of 3" in best.stdout  # the header, on stdout


def test_score_leaves_out_aigcs_own_contact_sheets_pages_and_records(tiny_dcgan, tmp_path):
    out = tmp_path / "out"  # what `aigc score out/*` sees: assets beside the sheets, pages and records aigc wrote
    run(
        "generate",
        "image",
        "a face",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "3",
        "--seed",
        "1",
        "--out",
        str(out),
    )
    (tmp_path / "b.txt").write_text("a face\n")
    run(
        "batch",
        str(tmp_path / "b.txt"),
        "--kind",
        "image",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
    )  # contact-row-1.png, index.html, manifest.jsonl, batch.json too
    everything = sorted(str(p) for p in out.iterdir() if not p.name.startswith("."))
    scored = run("score", *everything, "--prompt", "a face", "--json")
    judged = sorted(json.loads(line)["file"] for line in scored.stdout.splitlines())
    assert judged == sorted(str(p) for p in out.glob("*.png") if not p.name.startswith("contact-"))
    assert len(judged) == 5 and "left out 5 of aigc's own file(s)" in scored.stderr, scored.stderr
    sheets = sorted(str(p) for p in out.glob("contact-*.png"))
    refused = run("score", *sheets, "--prompt", "a face", ok=False)
    assert refused.returncode == 1 and "nothing to score" in refused.stderr


def test_models_shows_each_default_model_id_whole_in_a_narrow_terminal():
    from aigc.runtime import registry

    shown = subprocess.run(
        [AIGC, "models"], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "48"}
    ).stdout
    for spec in registry.backends().values():
        assert spec.default_model is None or spec.default_model in shown, spec.default_model


def test_batch_on_the_command_line_with_knob_options(tiny_dcgan, tmp_path):
    (tmp_path / "p.txt").write_text("a face\nbad\n")
    (tmp_path / "p.csv").write_text("prompt,truncation\na face,0.5\nbad,9\n")
    result = run(
        "batch",
        str(tmp_path / "p.csv"),
        "--kind",
        "image",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--size",
        "48",
    )
    assert "made 2, skipped 0 already done, failed 1" in result.stdout and "row 3: truncation=9" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["params"]["size"] for r in records} == {48} and {r["params"]["truncation"] for r in records} == {0.5}
    again = run(
        "batch",
        str(tmp_path / "p.csv"),
        "--kind",
        "image",
        "--backend",
        "gan",
        "--model",
        tiny_dcgan,
        "-n",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--size",
        "48",
    )
    assert "made 0, skipped 2 already done" in again.stdout
    bad = run("batch", str(tmp_path / "p.txt"), "--kind", "image", "--out", str(tmp_path / "o2"), "stray", ok=False)
    assert bad.returncode == 2 and "knobs are given as --name VALUE" in bad.stderr

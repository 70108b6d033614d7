"""`aigc tune text`: preference pairs from ratings, DPO through TRL as a PEFT LoRA adapter (real training on a
tiny random GPT-2, then the real SmolLM2 pack), resuming after a kill, and the adapter loading everywhere a
model reference goes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aigc
from aigc.errors import ConfigError, ModelLoadError
from aigc.runtime.devices import DeviceManager
from aigc.scoring.library import Library
from aigc.scoring.scorer import Item
from aigc.tuning import pairs as pair_sources

AIGC = str(Path(sys.executable).with_name("aigc"))
SEA = ["the waves roll over the grey sea", "a small boat sails on the blue ocean", "gulls cry above the tide"]
MONEY = ["the bank raised its fees again", "he counted the money twice", "stocks fell and the cash ran out"]


def run(*args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([AIGC, *args], capture_output=True, text=True, timeout=600, env=env)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def rated_library(tmp_path_factory) -> Path:
    """A team that liked texts about the sea and disliked texts about money, by thumbs and by one choice."""
    library = Library(tmp_path_factory.mktemp("team"))
    for i, (sea, money) in enumerate(zip(SEA, MONEY, strict=True)):
        library.rate(Item("text", sea, f"Write line {i}"), +1, user="ana")
        library.rate(Item("text", money, f"Write line {i}"), -1, user="ben")
    library.prefer(Item("text", SEA[0], "Write about today"), Item("text", MONEY[0], "Write about today"), user="ana")
    return library.path


def test_pairs_come_from_choices_thumbs_of_one_prompt_and_of_any(rated_library):
    found = pair_sources.from_ratings(Library(rated_library).ratings(), seed=0)
    counts = found.counts()
    assert counts == {"choice": 1, "thumbs": 3, "thumbs-any": 6}
    assert all(p.chosen in SEA and p.rejected in MONEY for p in found.pairs)
    same = [p for p in found.pairs if p.source == "thumbs"]
    assert {(p.prompt, p.chosen, p.rejected) for p in same} == {
        (f"Write line {i}", s, m) for i, (s, m) in enumerate(zip(SEA, MONEY, strict=True))
    }
    assert pair_sources.from_ratings(Library(rated_library).ratings(), seed=0).pairs == found.pairs  # seeded
    assert pair_sources.from_ratings(Library(rated_library).ratings(user="ana")).pairs == [found.pairs[0]]


def test_ratings_made_before_texts_were_kept_are_counted_not_guessed(tmp_path, rated_library):
    lines = (rated_library / "ratings.jsonl").read_text().splitlines()
    legacy = [json.loads(line) for line in lines]
    for line in legacy:
        for side in ("item", "other"):
            if line.get(side):
                line[side].pop("text")
    (tmp_path / "ratings.jsonl").write_text("".join(json.dumps(line) + "\n" for line in legacy))
    found = pair_sources.from_ratings(Library(tmp_path).ratings())
    assert found.pairs == [] and found.no_text == 8
    result = run("tune", "text", "--from", str(tmp_path), "--out", str(tmp_path / "a"), ok=False)
    assert result.returncode == 1 and "no preference pairs" in result.stderr and len(result.stderr.splitlines()) == 2


def test_best_of_candidates_pair_best_against_worst(tmp_path, tiny_gpt2):
    assets = aigc.generate(
        "text", "The harbour", model=tiny_gpt2, seed=3, n=4, max_new_tokens=6, manager=DeviceManager("cpu")
    )
    for i, (asset, score) in enumerate(zip(assets, (0.4, 0.7, 0.2, 0.5), strict=True)):
        asset.score = score  # as the scorer's loop leaves each candidate (scoring itself is tested elsewhere)
        asset.save(tmp_path / f"candidate-{i}.txt")
    (tmp_path / "notes.txt").write_text("a text without an aigc record is not a candidate")
    pairs = pair_sources.best_vs_worst(pair_sources.saved_candidates(tmp_path))
    ranked = sorted(assets, key=lambda a: a.score, reverse=True)
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [(ranked[0].data, ranked[-1].data, "best-of")]


def _margin(model_ref: str, pairs) -> float:
    """Mean log-probability margin of chosen over rejected answers under a model loaded the way aigc loads it."""
    import torch

    from aigc.generators.text.causal_lm import CausalLMGenerator

    loaded = CausalLMGenerator(model_ref, DeviceManager("cpu")).load()
    total = 0.0
    for pair in pairs:
        prompt = loaded.tokenizer(pair.prompt)["input_ids"]
        for answer, sign in ((pair.chosen, 1.0), (pair.rejected, -1.0)):
            ids = torch.tensor([prompt + loaded.tokenizer(" " + answer)["input_ids"]])
            with torch.no_grad():
                logits = loaded.model(ids).logits.log_softmax(-1)[0, len(prompt) - 1 : -1]
            total += sign * float(logits.gather(1, ids[0, len(prompt) :, None]).sum())
    return total / len(pairs)


def test_dpo_training_resumes_after_a_kill_and_moves_the_model_toward_the_liked_texts(
    tmp_path, rated_library, tiny_gpt2
):
    out = tmp_path / "sea-adapter"
    args = [
        "tune",
        "text",
        "--from",
        str(rated_library),
        "--model",
        tiny_gpt2,
        "--out",
        str(out),
        "--steps",
        "12",
        "--save-every",
        "2",
        "--learning-rate",
        "5e-3",
        "--seed",
        "1",
    ]
    process = subprocess.Popen([AIGC, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "adapter_config.json").exists()  # killed mid-way: no adapter yet, only checkpoints

    resumed = run(*args)
    assert "resuming from" in resumed.stderr and "checkpoint-" in resumed.stderr
    assert "12/12" in resumed.stderr  # the progress bar ran to the end
    record = json.loads((out / "aigc-adapter.json").read_text())
    assert record["resumed_from"].startswith("checkpoint-") and record["steps_trained"] == 12
    assert record["base_model"] == tiny_gpt2 and record["data"]["pairs"] == 10
    assert record["data"]["sources"] == {"choice": 1, "thumbs": 3, "thumbs-any": 6}
    assert record["data"]["fingerprint"] == pair_sources.fingerprint(
        pair_sources.from_ratings(Library(rated_library).ratings(), seed=1).pairs
    )
    assert not (out / "checkpoints").exists()
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth")]  # safetensors only

    again = run(*args, ok=False)  # a finished adapter is never overwritten silently
    assert again.returncode == 1 and "--fresh" in again.stderr

    pairs = pair_sources.from_ratings(Library(rated_library).ratings()).pairs
    assert _margin(str(out), pairs) > _margin(tiny_gpt2, pairs) + 0.5


def test_an_adapter_loads_as_model_or_adapter_in_python_cli_and_batch_rows(
    tmp_path, tiny_gpt2, tiny_gpt2_other, trained_adapter
):
    manager = DeviceManager("cpu")
    by_model = aigc.generate("text", "The sea", model=trained_adapter, seed=4, max_new_tokens=6, manager=manager)[0]
    by_knob = aigc.generate(
        "text", "The sea", model=tiny_gpt2, adapter=trained_adapter, seed=4, max_new_tokens=6, manager=manager
    )[0]
    base = aigc.generate("text", "The sea", model=tiny_gpt2, seed=4, max_new_tokens=6, manager=manager)[0]
    assert by_model.data == by_knob.data and by_model.backend == "lm" and by_model.model == trained_adapter
    assert by_knob.params["adapter"] == trained_adapter
    assert by_model.data != base.data  # the adapter changed the model

    printed = run("generate", "text", "The sea", "--model", trained_adapter, "--seed", "4", "--max-new-tokens", "6")
    assert printed.stdout.strip() == by_model.data.strip()
    rows = tmp_path / "rows.csv"
    rows.write_text(f"prompt,model,adapter,seed\nThe sea,{tiny_gpt2},{trained_adapter},4\n")
    run("batch", str(rows), "--kind", "text", "--out", str(tmp_path / "shoot"), "--max-new-tokens", "6")
    saved = next((tmp_path / "shoot").rglob("*.txt"))
    assert saved.read_text().strip() == by_model.data.strip()

    with pytest.raises(ConfigError, match="was trained on") as wrong:
        aigc.generate("text", "x", model=tiny_gpt2_other, adapter=trained_adapter, max_new_tokens=2, manager=manager)
    assert wrong.value.field == "adapter"
    with pytest.raises(ConfigError, match="not an adapter directory"):
        aigc.generate("text", "x", model=tiny_gpt2, adapter=tiny_gpt2, max_new_tokens=2, manager=manager)
    with pytest.raises(ConfigError, match="no such file"):
        aigc.generate("text", "x", model=tiny_gpt2, adapter=str(tmp_path / "nope"), max_new_tokens=2)


def test_damaged_adapters_fail_in_one_line_before_any_load(tmp_path, trained_adapter):
    broken = tmp_path / "broken"
    shutil.copytree(trained_adapter, broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a JSON object"):
        aigc.generate("text", "x", model=str(broken), max_new_tokens=2)
    (broken / "adapter_config.json").write_text((Path(trained_adapter) / "adapter_config.json").read_text())
    (broken / "adapter_model.safetensors").unlink()
    result = run("generate", "text", "x", "--model", str(broken), ok=False)
    assert result.returncode == 1 and "safetensors" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    orphan = tmp_path / "orphan"
    shutil.copytree(trained_adapter, orphan)
    record = json.loads((orphan / "aigc-adapter.json").read_text()) | {"base_model": str(tmp_path / "gone")}
    (orphan / "aigc-adapter.json").write_text(json.dumps(record))
    with pytest.raises(ModelLoadError, match="base model"):
        aigc.generate("text", "x", model=str(orphan), max_new_tokens=2)


def test_bad_tune_requests_fail_in_one_line(tmp_path, rated_library, tiny_gpt2, trained_adapter):
    cases = [
        (["--from", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "no such library"),
        (["--from", str(rated_library), "--out", str(tmp_path / "o"), "--steps", "0"], "--steps=0"),
        (["--from", str(rated_library), "--out", str(tmp_path / "o"), "--learning-rate", "nan"], "--learning-rate"),
        (["--from", str(rated_library), "--out", str(tmp_path / "o"), "--model", trained_adapter], "is an adapter"),
        (["--from", str(rated_library), "--out", str(tmp_path / "o"), "--model", str(tmp_path)], "no config.json"),
    ]
    for args, message in cases:
        result = run("tune", "text", *args, ok=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    blocked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['peft'] = None; "
            "from aigc.cli import main; sys.argv = ['aigc', 'tune', 'text', '--from', '.', "
            "'--out', 'x']; main()",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert blocked.returncode == 1 and "pip install 'aigc[tune]'" in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, rated_library, tiny_gpt2) -> str:
    from aigc.tuning.text_dpo import Settings, tune_text

    found = pair_sources.from_ratings(Library(rated_library).ratings())
    out = tmp_path_factory.mktemp("adapter") / "sea"
    tune_text(found.pairs, tiny_gpt2, out, Settings(steps=4, learning_rate=5e-3, save_every=50), progress=False)
    return str(out)


@pytest.mark.pack
def test_the_smollm2_pack_tunes_end_to_end_and_generates_with_its_adapter(tmp_path, rated_library):
    out = tmp_path / "smol"
    run(
        "tune",
        "text",
        "--from",
        str(rated_library),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--max-length",
        "96",
    )
    record = json.loads((out / "aigc-adapter.json").read_text())
    assert record["base_model"] == "pack:smollm2" and record["steps_trained"] == 3
    tuned = aigc.generate(
        "text",
        "Write one line about your weekend.",
        model=str(out),
        seed=5,
        max_new_tokens=20,
        manager=DeviceManager("cpu"),
    )[0]
    words = tuned.data.split()
    assert len(words) >= 5 and sum(w.isalpha() for w in words) / len(words) > 0.5  # still prose
    assert tuned.info["prompt_tokens"] > 15  # the chat template still wraps the prompt

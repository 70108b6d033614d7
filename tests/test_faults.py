"""Faults injected for real: kill -9 at random points of a batch and of a workflow run, a full disk, a read-only
output, torn and malformed library and manifest lines, two writers on one directory. Nothing a user made is
lost or corrupted, and the same command resumes to exactly what an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.orchestration.batch import Manifest

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"


def _killed_at(command: list[str], progress, target: int, extra_s: float, timeout: float = 120) -> bool:
    """Start `command`, wait until progress() >= target (plus extra_s), kill -9 it; False if it finished first."""
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and progress() < target and worker.poll() is None:
        time.sleep(0.01)
    time.sleep(extra_s)
    finished = worker.poll() is not None
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    return not finished


def _contents(directory: Path, files: list[str]) -> dict[str, bytes]:
    """What each asset holds: text bytes, or image pixels (PNG bytes also carry the creation time)."""
    out = {}
    for name in files:
        asset = aigc.load(directory / name)
        out[name] = asset.data.encode() if asset.kind == "text" else np.asarray(asset.data).tobytes()
    return out


def test_a_batch_killed_at_random_points_resumes_to_exactly_the_uninterrupted_assets(tiny_gpt2, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(36)))
    out, clean = tmp_path / "out", tmp_path / "clean"
    command = [
        AIGC,
        "batch",
        str(prompts),
        "--kind",
        "text",
        "--model",
        tiny_gpt2,
        "--seed",
        "3",
        "--batch-size",
        "1",
        "--max-new-tokens",
        "12",
        "--out",
        str(out),
    ]
    rng, kills = random.Random(14), 0
    for _ in range(12):  # each round resumes, makes a little more, and is killed mid-way again
        target = len(Manifest(out).records()) + rng.randint(1, 2)
        kills += _killed_at(command, lambda: len(Manifest(out).records()), target, rng.uniform(0, 0.05))
    assert kills >= 10, "the batch should have been killed part-way most rounds"
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert subprocess.run([*command[:-1], str(clean)], capture_output=True).returncode == 0
    records = Manifest(out).records()
    assert sorted(r["row"] for r in records) == list(range(1, 37))  # every asset once, none duplicated
    files = [r["file"] for r in records]
    assert _contents(out, files) == _contents(clean, files)
    assert not list(out.glob(".*.part")) and len((out / "manifest.jsonl").read_text().splitlines()) >= 36


RECIPE = """
inputs: {{topic: the sea}}
steps:
  - name: ideas
    kind: text
    model: {lm}
    n: 8
    prompt: "Ideas about {{topic}}"
    params: {{max_new_tokens: 6}}
  - name: titles
    kind: text
    model: {lm}
    prompt: "A title for: {{ideas}}"
    params: {{max_new_tokens: 4}}
  - name: faces
    kind: image
    backend: gan
    model: {gan}
    n: 2
    prompt: "{{titles}}"
"""


def test_a_workflow_run_killed_at_random_points_resumes_to_exactly_the_uninterrupted_run(
    tiny_gpt2, tiny_dcgan, tmp_path
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(lm=tiny_gpt2, gan=tiny_dcgan))
    clean = tmp_path / "clean"
    done = subprocess.run(
        [AIGC, "run", str(recipe), "--seed", "5", "--out", str(clean)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    whole = json.loads((clean / "run.json").read_text())
    files = [a["file"] for step in whole["steps"] for a in step["assets"]]
    assert len(files) == 8 + 8 + 16
    rng, kills, copy = random.Random(7), 0, 0
    while kills < 10 and copy < 6:  # a fast machine may finish a run between kills: then kill another copy
        out, copy = tmp_path / f"run-{copy}", copy + 1
        command = [AIGC, "run", str(recipe), "--seed", "5", "--out", str(out)]
        progress = out / "progress.jsonl"

        def calls(progress: Path = progress, out: Path = out) -> int:  # this copy's files, bound now
            try:
                return len(progress.read_text().splitlines())
            except FileNotFoundError:  # not started yet, or the run finished and removed it
                return 10**6 if (out / "run.json").exists() else 0

        while kills < 10 and not (out / "run.json").exists():
            kills += _killed_at(command, calls, calls() + 1, rng.uniform(0, 0.05))
        resumed = subprocess.run(command, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        record = json.loads((out / "run.json").read_text())
        assert [a["file"] for step in record["steps"] for a in step["assets"]] == files
        assert _contents(out, files) == _contents(clean, files)
        assert not (out / "progress.jsonl").exists() and not list(out.glob(".*.part"))
    assert kills >= 10, "the runs should have been killed part-way at least ten times"


def test_a_finished_run_is_not_run_again_and_another_run_is_refused(tiny_gpt2, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"steps:\n  - name: a\n    kind: text\n    model: {tiny_gpt2}\n    prompt: hi\n"
        "    params: {max_new_tokens: 2}\n"
    )
    first = aigc.run(recipe, tmp_path / "run")
    stamp = first.stat().st_mtime_ns
    assert aigc.run(recipe, tmp_path / "run") == first and first.stat().st_mtime_ns == stamp
    with pytest.raises(aigc.ConfigError, match="already holds a run"):
        aigc.run(recipe, tmp_path / "run", seed=1)


@contextmanager
def small_filesystem(path: Path, size: str):
    """A real tmpfs of `size` mounted at `path` (root only); skips where mounting is not allowed."""
    path.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root to mount a small filesystem")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_disk_stops_with_one_line_keeps_what_was_written_and_resumes(tiny_gpt2, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"a story about the number {i}\n" for i in range(40)))
    with small_filesystem(tmp_path / "disk", "48k") as disk:
        out = disk / "out"
        command = [
            AIGC,
            "batch",
            str(prompts),
            "--kind",
            "text",
            "--model",
            tiny_gpt2,
            "--seed",
            "1",
            "--max-new-tokens",
            "40",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ]
        full = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0] and "run the same command again" in errors[0]
        records = Manifest(out).records()
        assert 0 < len(records) < 40
        for record in records:  # what was recorded is whole and reads back
            assert aigc.load(out / record["file"]).data
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and f"skipped {len(records)}" in again.stdout
        assert sorted(r["row"] for r in Manifest(out).records()) == list(range(1, 41))


def test_a_read_only_output_is_refused_before_any_work(tmp_path):
    with small_filesystem(tmp_path / "ro", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = subprocess.run(
            [AIGC, "generate", "image", "x", "--backend", "gan", "--out", str(disk / "faces")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Read-only file system" in done.stderr and "Traceback" not in done.stderr
        (tmp_path / "p.txt").write_text("x\n")
        with pytest.raises(aigc.StorageError, match="Read-only file system"):
            aigc.batch(tmp_path / "p.txt", disk / "batch", kind="image", backend="gan")


def test_torn_and_malformed_library_lines_are_skipped_and_never_swallow_the_next_entry(tiny_gpt2, tmp_path):
    from aigc.scoring.scorer import CreativityScorer

    library = aigc.Library(tmp_path / "lib")
    library.add_vectors("text:x", np.ones((1, 4), np.float32), ["first"])
    with open(tmp_path / "lib" / "library.jsonl", "ab") as handle:
        handle.write(b'{}\n{"space": "text:x", "vector": "!!!"}\n{"space": "text:x", "vec')  # malformed, then torn
    library.add_vectors("text:x", np.ones((1, 4), np.float32), ["after the tear"])
    with pytest.warns(UserWarning, match="3 torn or malformed line"):
        assert len(aigc.Library(tmp_path / "lib")) == 2  # the entry after the torn line is whole
    scorer = CreativityScorer(aigc.runtime.devices.DeviceManager("cpu"), language_model=None)
    with pytest.warns(UserWarning):
        best = aigc.generate(
            "text",
            "The sea",
            model=tiny_gpt2,
            best_of=2,
            seed=1,
            max_new_tokens=4,
            scorer=scorer,
            library=tmp_path / "lib",
            manager=scorer.manager,
        )[0]
    assert best.search.library_size == 2


def test_two_batches_cannot_write_one_directory_at_once_and_leftovers_are_cleaned(tiny_dcgan, tmp_path):
    from filelock import FileLock

    (tmp_path / "p.txt").write_text("x\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".r0001-v0-x.png.abc123.part").write_bytes(b"half a file from a killed run")
    with FileLock(str(out / ".aigc.lock")):  # another writer holds it
        script = textwrap.dedent(f"""
            import aigc
            aigc.batch({str(tmp_path / "p.txt")!r}, {str(out)!r}, kind="image", backend="gan", model={tiny_dcgan!r})
        """)
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert other.returncode != 0 and "is in use by another aigc batch right now" in other.stderr
    summary = aigc.batch(tmp_path / "p.txt", out, kind="image", backend="gan", model=tiny_dcgan)
    assert summary.made == 1 and not list(out.glob(".*.part"))
    again = aigc.batch(tmp_path / "p.txt", out, kind="image", backend="gan", model=tiny_dcgan)
    assert (again.made, again.skipped) == (0, 1) and len(Manifest(out).records()) == 1

"""Batches: manifest, resume after kill -9, isolated bad rows, gallery, and Ray giving the same assets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.orchestration.batch import Manifest, derive_seed, read_prompts


def manifest(directory: Path) -> list[dict]:
    return Manifest(directory).records()


def test_a_batch_writes_assets_and_a_manifest_that_agree(tiny_dcgan, tmp_path):
    (tmp_path / "prompts.txt").write_text("a face\n\n# a comment\nanother face\n")
    summary = aigc.batch(
        tmp_path / "prompts.txt", tmp_path / "out", kind="image", backend="gan", model=tiny_dcgan, n=3, seed=5
    )
    records = manifest(tmp_path / "out")
    assert summary.made == 6 and not summary.failed
    assert sorted((r["row"], r["variant"]) for r in records) == [(1, 0), (1, 1), (1, 2), (4, 0), (4, 1), (4, 2)]
    assert all((tmp_path / "out" / r["file"]).exists() for r in records)
    assert {r["seed"] for r in records} == {derive_seed(5, row, v) for row in (1, 4) for v in range(3)}
    files = {p.name for p in (tmp_path / "out").glob("r*.png")}
    assert files == {r["file"] for r in records}  # nothing on disk that the manifest does not know
    page = (tmp_path / "out" / "index.html").read_text()
    assert all(r["file"] in page for r in records)  # the gallery shows every asset
    assert (tmp_path / "out" / "contact-row-1.png").exists() and (tmp_path / "out" / "contact-row-4.png").exists()


def test_each_gallery_card_links_its_file_once_and_names_keep_their_words(tiny_dcgan, tiny_gpt2, tmp_path):
    import re

    (tmp_path / "faces.txt").write_text("Café déjà vu\nМосква ночью\n")
    aigc.batch(tmp_path / "faces.txt", tmp_path / "faces", kind="image", backend="gan", model=tiny_dcgan, n=2, seed=1)
    (tmp_path / "texts.txt").write_text("Once upon a time\n")
    aigc.batch(tmp_path / "texts.txt", tmp_path / "texts", kind="text", model=tiny_gpt2, n=2, seed=1, max_new_tokens=4)
    for out in (tmp_path / "faces", tmp_path / "texts"):
        page = (out / "index.html").read_text()
        cards = page.split("<div class=card")[1:]
        assert len(cards) == len(manifest(out)) and cards
        for card, record in zip(cards, sorted(manifest(out), key=lambda r: (r["row"], r["variant"])), strict=True):
            assert re.findall(r'href="([^"]+)"', card) == [f"./{record['file']}"], card  # one link, to its file
    names = sorted(r["file"] for r in manifest(tmp_path / "faces"))
    assert any("cafe-deja-vu" in name for name in names) and any("moskva-noch-yu" in name for name in names), names


def test_an_asset_is_the_one_its_seed_makes_alone(tiny_dcgan, tmp_path):
    (tmp_path / "p.txt").write_text("x\n")
    aigc.batch(tmp_path / "p.txt", tmp_path / "out", kind="image", backend="gan", model=tiny_dcgan, n=2, seed=1)
    record = manifest(tmp_path / "out")[1]
    alone = aigc.generate("image", "x", backend="gan", model=tiny_dcgan, seed=record["seed"])[0]
    assert np.array_equal(np.asarray(alone.data), np.asarray(aigc.load(tmp_path / "out" / record["file"]).data))


def test_rerunning_skips_finished_work_and_reports_changed_params(tiny_dcgan, tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\n")
    args = dict(kind="image", backend="gan", model=tiny_dcgan, n=2, seed=1)
    aigc.batch(tmp_path / "p.txt", tmp_path / "out", **args)
    again = aigc.batch(tmp_path / "p.txt", tmp_path / "out", **args)
    assert (again.made, again.skipped, again.changed) == (0, 4, [])
    changed = aigc.batch(tmp_path / "p.txt", tmp_path / "out", truncation=0.5, **args)
    assert changed.made == 0 and len(changed.changed) == 4 and "other params" in str(changed)
    more = aigc.batch(tmp_path / "p.txt", tmp_path / "out", **{**args, "n": 3})
    assert more.made == 2 and len(manifest(tmp_path / "out")) == 6  # only the new variants


def test_bad_rows_fail_alone_with_their_reason(tiny_gpt2, tmp_path):
    rows = [
        '{"prompt": "The sea"}',
        '{"prompt": "A door", "temperature": -1}',
        "not json",
        '{"seed": 3}',
        '{"prompt": "Night", "seed": 40, "max_new_tokens": 3}',
        '{"prompt": "Wrong", "backend": "gpt5"}',
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(rows) + "\n")
    summary = aigc.batch(tmp_path / "p.jsonl", tmp_path / "out", kind="text", model=tiny_gpt2, max_new_tokens=5)
    assert summary.made == 2
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    reasons = {f["row"]: f["reason"] for f in failures}
    assert set(reasons) == {2, 3, 4, 6}
    assert "temperature=-1.0 is out of range" in reasons[2] and "not valid JSON" in reasons[3]
    assert "no prompt" in reasons[4] and "backend='gpt5'" in reasons[6]
    night = [r for r in manifest(tmp_path / "out") if r["prompt"] == "Night"][0]
    assert night["seed"] == 40 and night["params"]["max_new_tokens"] == 3  # per-row params win


def test_csv_rows_carry_their_own_params(tiny_dcgan, tmp_path):
    (tmp_path / "p.csv").write_text("prompt,seed,size\nsmall,1,16\nbig,2,64\n")
    aigc.batch(tmp_path / "p.csv", tmp_path / "out", kind="image", backend="gan", model=tiny_dcgan)
    sizes = {
        r["prompt"]: (aigc.load(tmp_path / "out" / r["file"]).data.size, r["seed"]) for r in manifest(tmp_path / "out")
    }
    assert sizes == {"small": ((16, 16), 1), "big": ((64, 64), 2)}
    with pytest.raises(aigc.ConfigError, match="needs a header row with a 'prompt' column"):
        (tmp_path / "bad.csv").write_text("text\nhello\n")
        read_prompts(tmp_path / "bad.csv")


def test_resume_after_kill_9_yields_exactly_the_expected_assets(tiny_gpt2, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(40)))
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import aigc
        aigc.batch({str(prompts)!r}, {str(out)!r}, kind="text", model={tiny_gpt2!r}, seed=3, batch_size=1,
                   max_new_tokens=24)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(manifest(out)) < 5 and worker.poll() is None:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    interrupted = len(manifest(out))
    assert 5 <= interrupted < 40, "the batch should have been killed part-way"
    summary = aigc.batch(prompts, out, kind="text", model=tiny_gpt2, seed=3, max_new_tokens=24)
    assert summary.skipped == interrupted and summary.made == 40 - interrupted
    records = manifest(out)
    assert sorted(r["row"] for r in records) == list(range(1, 41))  # every asset once, none duplicated
    clean = tmp_path / "clean"
    aigc.batch(prompts, clean, kind="text", model=tiny_gpt2, seed=3, max_new_tokens=24)
    for record in records:
        assert (out / record["file"]).read_text() == (clean / record["file"]).read_text()
    assert not list(out.glob(".*.part"))  # no half-written file left behind


def test_a_torn_manifest_line_is_repaired_by_the_next_append(tmp_path):
    book = Manifest(tmp_path)
    book.append({"row": 1, "variant": 0, "file": "a"})
    with open(book.path, "ab") as handle:
        handle.write(b'{"row": 2, "var')  # kill -9 in the middle of a line
    book.append({"row": 3, "variant": 0, "file": "c"})
    assert [r["row"] for r in book.records()] == [1, 3]


def test_unknown_engine_and_unreadable_files_are_explained(tmp_path):
    (tmp_path / "p.txt").write_text("x\n")
    with pytest.raises(aigc.ConfigError, match="engine='spark'"):
        aigc.batch(tmp_path / "p.txt", tmp_path / "out", kind="image", engine="spark")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(aigc.ConfigError, match=".txt .one per line., .csv"):
        aigc.batch(tmp_path / "p.xlsx", tmp_path / "out", kind="image")


def test_ray_and_local_engines_make_identical_assets(tiny_dcgan, tiny_gpt2, tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\nfour\nfive\n")
    for kind, model, knobs in (("image", tiny_dcgan, {}), ("text", tiny_gpt2, {"max_new_tokens": 5})):
        local = tmp_path / f"local-{kind}"
        distributed = tmp_path / f"ray-{kind}"
        aigc.batch(tmp_path / "p.txt", local, kind=kind, model=model, n=2, seed=9, batch_size=2, **knobs)
        summary = aigc.batch(
            tmp_path / "p.txt",
            distributed,
            kind=kind,
            model=model,
            n=2,
            seed=9,
            batch_size=2,
            engine="ray",
            workers=2,
            **knobs,
        )
        assert summary.made == 10
        by_key = {(r["row"], r["variant"]): r for r in manifest(local)}
        for record in manifest(distributed):
            twin = by_key[(record["row"], record["variant"])]
            assert record["seed"] == twin["seed"] and record["file"] == twin["file"]
            a, b = aigc.load(local / twin["file"]).data, aigc.load(distributed / record["file"]).data
            assert a == b if kind == "text" else np.array_equal(np.asarray(a), np.asarray(b))

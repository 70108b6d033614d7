"""Ratings kept with the team library: thumbs and choices from Python and from `aigc rate`, read back from disk,
safe for several writers, and bad input refused in one line before anything is written or loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import aigc
from aigc.cli import cli
from aigc.scoring.library import Library
from aigc.scoring.ratings import FILE, Ratings, content_key


def _clip(seed: int, seconds: float = 0.2):
    """A distinct little sound (audio embeds with no model: its spectral fingerprint)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 97 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32), 16000


@pytest.fixture(scope="module")
def scorer():
    from aigc.runtime.devices import DeviceManager
    from aigc.scoring.scorer import CreativityScorer

    return CreativityScorer(DeviceManager("cpu"), language_model=None)


def test_thumbs_and_choices_are_stored_with_their_embeddings_and_read_back(tmp_path, scorer):
    library = Library(tmp_path / "team")
    story, other, third = "A lighthouse on the moon.", "Tax forms in triplicate.", "A fox in the snow."
    library.rate(story, 1, user="ann", note="lovely", scorer=scorer)
    library.rate(story, -1, user="ann", scorer=scorer)  # ann changed her mind: the latest counts
    library.rate(story, 1, user="bob", scorer=scorer)
    library.rate(third, 1, user="bob", scorer=scorer)
    library.rate(third, 0, user="bob", scorer=scorer)  # taken back
    library.prefer(story, other, user="ann", note="more wonder", refs=("s.txt", "o.txt"), scorer=scorer)

    lines = (tmp_path / "team" / FILE).read_text().splitlines()
    assert len(lines) == 6  # append-only: every rating is kept on disk
    again = Library(tmp_path / "team").ratings()  # a fresh reader, from the file alone
    thumbs = {(r.user, r.value) for r in again if r.type == "thumb"}
    assert thumbs == {("ann", -1), ("bob", 1)}
    (choice,) = [r for r in again if r.type == "pair"]
    assert (choice.item.ref, choice.other.ref, choice.note) == ("s.txt", "o.txt", "more wonder")
    assert choice.item.text == story and choice.item.space == "text:pack:minilm"
    expected = scorer.embed([story, other])
    np.testing.assert_allclose(choice.item.vector, expected[0][1], atol=1e-6)
    np.testing.assert_allclose(choice.other.vector, expected[1][1], atol=1e-6)
    assert [r.user for r in Library(tmp_path / "team").ratings(user="ann")] == ["ann", "ann"]


def test_an_item_is_one_item_wherever_it_was_read_from(tmp_path, scorer):
    face = aigc.generate("image", "face", backend="gan", seed=3)[0]
    path = face.save(tmp_path / "face.png")
    from_file = aigc.load(path)
    assert content_key("image", face.data) == content_key("image", from_file.data)
    library = Library(tmp_path / "team")
    library.rate(face, 1, user="ann", scorer=scorer)
    library.rate(from_file, -1, user="ann", scorer=scorer)  # the same face: ann's latest thumb replaces the first
    (only,) = library.ratings()
    assert only.value == -1 and only.item.kind == "image" and only.item.vector.shape == (1280,)
    assert only.item.origin["seed"] == 3 and only.item.origin["backend"] == "gan"


def test_torn_and_foreign_lines_are_skipped_and_the_next_rating_starts_a_fresh_line(tmp_path, scorer):
    library = Library(tmp_path)
    library.rate(_clip(1), 1, user="ann", scorer=scorer)
    with open(tmp_path / FILE, "a") as handle:
        handle.write('{"type": "thumb", "user": "x", "value": 7, "item": {}}\n{"type": "pair", "value": 1, "ite')
    library.rate(_clip(2), -1, user="ann", scorer=scorer)
    assert [r.value for r in library.ratings()] == [1, -1]
    assert (tmp_path / FILE).read_text().count("\n") == 4


def test_two_processes_rate_into_one_library_at_once(tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np
        import sys
        from aigc.scoring.library import Library
        from aigc.scoring.scorer import CreativityScorer

        scorer, start = CreativityScorer(language_model=None), int(sys.argv[1])
        t = np.arange(3200) / 16000
        for seed in range(start, start + 15):
            clip = (0.3 * np.sin(2 * np.pi * (200 + 37 * seed) * t)).astype(np.float32)
            Library({str(tmp_path)!r}).rate((clip, 16000), 1 if seed % 2 else -1, user=f"w{{start}}", scorer=scorer)
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(start)]) for start in (0, 100)]
    assert all(worker.wait(timeout=120) == 0 for worker in workers)
    ratings = Ratings(tmp_path).all()
    assert len(ratings) == 30 and len((tmp_path / FILE).read_text().splitlines()) == 30
    assert {r.user for r in ratings} == {"w0", "w100"}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lib: lib.rate("x", 2), "a rating is \\+1 \\(up\\), -1 \\(down\\) or 0"),
        (lambda lib: lib.rate("x", True), "a rating is"),
        (lambda lib: lib.rate("x", 1.0), "a rating is"),
        (lambda lib: lib.rate("x", 1, user="ann/../bob"), "a user name is 1-100 letters"),
        (lambda lib: lib.rate("x", 1, user=" "), "a user name is"),
        (lambda lib: lib.rate("x", 1, user="a" * 101), "a user name is"),
        (lambda lib: lib.rate("x", 1, user="ann\x00"), "a user name is"),
        (lambda lib: lib.rate("x", 1, note="n" * 2001), "a note is text of at most 2000"),
        (lambda lib: lib.rate("x", 1, note="bad\x07bell"), "control character"),
        (lambda lib: lib.rate("x", 1, ref=5), "ref=5 must be text"),
        (lambda lib: lib.rate("   ", 1), "an empty text has nothing to score"),
        (lambda lib: lib.rate(b"bytes", 1), "cannot score a bytes"),
        (lambda lib: lib.prefer("same", "same"), "two different items"),
        (lambda lib: lib.prefer("a text", _clip(1)), "one kind, not a text and a audio"),
        (lambda lib: lib.prefer("a", "b", refs="ab"), "must be a pair"),
        (lambda lib: Library(lib.path, taste_user="x;y"), "a user name is"),
    ],
)
def test_bad_ratings_are_refused_in_one_line_and_nothing_is_written(tmp_path, scorer, call, message):
    library = Library(tmp_path)
    with pytest.raises(aigc.ConfigError, match=message) as error:
        call(library)
    assert "\n" not in str(error.value)
    assert not (tmp_path / FILE).exists()


# --- aigc rate -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Three aigc text assets and one plain text file, as `aigc generate --out` would leave them."""
    from aigc.media.assets import Asset

    folder = tmp_path_factory.mktemp("texts")
    for i, words in enumerate(["The sea at dawn.", "A ledger of debts.", "Gulls over the harbour."]):
        Asset("text", words, "a line", i, "lm", "pack:smollm2").save(folder / f"line-{i}.txt")
    (folder / "plain.txt").write_text("Just some words.")
    return folder


def _cli(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_aigc_rate_up_down_undo_and_prefer(texts, tmp_path):
    library = tmp_path / "team"
    result = _cli(
        "rate",
        str(texts / "line-0.txt"),
        str(texts / "plain.txt"),
        "--up",
        "--user",
        "ann",
        "--library",
        str(library),
        "--note",
        "good",
    )
    assert result.exit_code == 0, result.output
    assert "up  " in result.output and "2 ratings in" in result.output
    assert _cli("rate", str(texts / "line-1.txt"), "--down", "--user", "ann", "--library", str(library)).exit_code == 0
    assert _cli("rate", str(texts / "plain.txt"), "--undo", "--user", "ann", "--library", str(library)).exit_code == 0
    result = _cli(
        "rate",
        "--prefer",
        str(texts / "line-2.txt"),
        str(texts / "line-1.txt"),
        "--user",
        "bob",
        "--library",
        str(library),
    )
    assert result.exit_code == 0 and "over" in result.output
    ratings = Library(library).ratings()
    assert sorted((r.type, r.user, r.value, r.item.ref.rsplit("/", 1)[-1]) for r in ratings) == [
        ("pair", "bob", 1, "line-2.txt"),
        ("thumb", "ann", -1, "line-1.txt"),
        ("thumb", "ann", 1, "line-0.txt"),
    ]
    assert next(r for r in ratings if r.type == "thumb" and r.value == 1).note == "good"
    assert next(r for r in ratings if r.type == "pair").item.prompt == "a line"  # an asset's prompt comes along


@pytest.mark.parametrize(
    "args, message",
    [
        (["x.txt"], "say one of --up, --down or --undo"),
        (["{t}/line-0.txt", "--up", "--down"], "not --up and --down"),
        (["--up"], "--up needs the FILES to rate"),
        (["{t}/missing.txt", "--up"], "does not exist"),
        (["{t}", "--up"], "is a directory"),
        (["{t}/../texts.csv", "--up"], "aigc reads"),
        (["--prefer", "{t}/line-0.txt", "{t}/line-0.txt"], "two different files"),
        (["--prefer", "{t}/line-0.txt", "{t}/line-1.txt", "{t}/plain.txt"], "--prefer takes no other FILES"),
        (["{t}/line-0.txt", "--up", "--user", "ann\tbob"], "a user name is"),
        (["--pairs", "{t}/line-0.txt"], "not a directory"),
    ],
)
def test_aigc_rate_refuses_bad_input_in_one_line(texts, tmp_path, args, message):
    command = [
        sys.executable,
        "-m",
        "aigc.cli",
        "rate",
        *[a.format(t=texts) for a in args],
        "--library",
        str(tmp_path / "team"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "team" / FILE).exists()


def test_aigc_rate_pairs_records_choices_from_a_session(texts, tmp_path):
    """A real session in a subprocess: three texts make three pairs; choose, skip, choose, then input ends."""
    library = tmp_path / "team"
    command = [
        sys.executable,
        "-m",
        "aigc.cli",
        "rate",
        "--pairs",
        str(texts),
        "--user",
        "ann",
        "--library",
        str(library),
        "--no-open",
        "--seed",
        "1",
    ]
    result = subprocess.run(command, input="1\nwhat\ns\n2\n", capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pair ") == 4 and "recorded 2 choice(s), skipped 1" in result.stdout
    assert "is not one of" in result.stdout + result.stderr  # a wrong key is asked again, not taken as a choice
    shown = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.strip().startswith("[")]
    pairs = [shown[i : i + 2] for i in range(0, len(shown), 2)]
    ratings = Library(library).ratings()
    assert [(r.item.ref, r.other.ref) for r in ratings] == [(pairs[0][0], pairs[0][1]), (pairs[2][1], pairs[2][0])]
    assert all(r.user == "ann" and r.type == "pair" for r in ratings)

    again = _cli(
        "rate", "--pairs", str(texts), "--user", "ann", "--library", str(library), "--no-open", input="s\n" * 10
    )
    assert again.exit_code == 0 and "recorded 0 choice(s), skipped 4" in again.output
    shown = [line.split("] ", 1)[1] for line in again.output.splitlines() if line.strip().startswith("[")]
    offered = {frozenset(shown[i : i + 2]) for i in range(0, len(shown), 2)}
    assert len(offered) == 4 and not offered & {frozenset(pairs[0]), frozenset(pairs[2])}
    # of the 6 pairs of four texts, the two ann chose between are not offered to her again

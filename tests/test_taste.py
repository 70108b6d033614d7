"""The taste model: fitted from a library's ratings once there are enough, stored as plain JSON beside it,
refitted when ratings change, left out when it does not beat chance, and the fourth part of the score that
best_of uses. Real MiniLM embeddings of real sentences throughout (tests/data/taste_sentences.tsv)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import aigc
from aigc.cli import cli
from aigc.scoring import taste as taste_module
from aigc.scoring.library import Library
from aigc.scoring.mean import weighted_geometric_mean
from aigc.scoring.taste import MIN_RATINGS, model_path

SPACE = "text:pack:minilm"
PROMPT = "Write one sentence."


def sentences() -> dict[str, list[str]]:
    rows = [
        line.split("\t") for line in (Path(__file__).parent / "data" / "taste_sentences.tsv").read_text().splitlines()
    ]
    return {topic: [text for t, text in rows if t == topic] for topic in ("sea", "money", "other")}


@pytest.fixture(scope="module")
def scorer():
    from aigc.runtime.devices import DeviceManager
    from aigc.scoring.scorer import CreativityScorer

    return CreativityScorer(DeviceManager("cpu"), language_model=None)


@pytest.fixture(scope="module")
def team(tmp_path_factory, scorer) -> Path:
    """A team that likes the sea and dislikes money: 20 + 20 thumbs (sim) and 20 choices (ann) on half the texts."""
    texts, rng = sentences(), random.Random(0)
    library = Library(tmp_path_factory.mktemp("team"))
    for text in texts["sea"][:20]:
        library.rate(text, 1, user="sim", scorer=scorer)
    for text in texts["money"][:20]:
        library.rate(text, -1, user="sim", scorer=scorer)
    for _ in range(20):
        better, worse = rng.choice(texts["sea"][:20] + texts["other"][:10]), rng.choice(texts["money"][:20])
        library.prefer(better, worse, user="ann", scorer=scorer)
    return library.path


def test_no_model_before_twenty_ratings_and_one_at_twenty(tmp_path, scorer):
    texts = sentences()
    library = Library(tmp_path)
    assert library.taste(SPACE) is None  # nothing rated: no taste part at all
    assert "taste" not in scorer.score([texts["sea"][30]], PROMPT, library=library)[0]
    for i in range(MIN_RATINGS - 1):
        library.rate(
            texts["sea"][i // 2] if i % 2 == 0 else texts["money"][i // 2], 1 if i % 2 == 0 else -1, scorer=scorer
        )
    young = library.taste(SPACE)
    assert not young.used and young.reason == "too few ratings: 19 of the 20 a model needs"
    result = scorer.score([texts["sea"][30]], PROMPT, library=library)[0]
    assert result["taste"] is None and result["taste_ratings"] == 19 and result["taste_accuracy"] is None
    library.rate(texts["money"][15], -1, scorer=scorer)
    grown = library.taste(SPACE)
    assert grown.used and grown.ratings == 20 and grown.held_out.n == 20 and grown.held_out.accuracy >= 0.9


def test_the_model_is_plain_json_beside_the_library_and_refitted_when_ratings_change(team, tmp_path, scorer):
    library = Library(shutil.copytree(team, tmp_path / "team"))
    model = library.taste(SPACE)
    stored = model_path(library.path, SPACE, None)
    raw = json.loads(stored.read_text())
    assert raw["format"] == "aigc-taste/1" and raw["used"] and len(raw["coef"]) == 384
    assert all(isinstance(x, float) for x in raw["coef"] + raw["mean"] + raw["scale"])
    assert raw["fingerprint"]["size"] == (library.path / "ratings.jsonl").stat().st_size

    taste_module._cache.clear()  # a new process: the model is read back, not refitted
    before = stored.stat().st_mtime_ns
    assert Library(library.path).taste(SPACE) == model and stored.stat().st_mtime_ns == before

    library.rate(sentences()["sea"][25], 1, user="sim", scorer=scorer)  # the ratings changed: refitted
    refitted = library.taste(SPACE)
    assert refitted.thumbs == model.thumbs + 1 and json.loads(stored.read_text())["thumbs"] == refitted.thumbs

    stored.write_text('{"format": "aigc-taste/1", "coef": [NaN')  # damaged: refitted, never trusted
    taste_module._cache.clear()
    assert Library(library.path).taste(SPACE) == refitted and json.loads(stored.read_text())["used"]


def test_a_taste_no_better_than_chance_is_left_out(tmp_path, scorer):
    texts, rng = sentences(), random.Random(3)
    library = Library(tmp_path)
    for text in texts["other"][:30]:  # thumbs by coin flip: nothing to learn
        library.rate(text, rng.choice([1, -1]), scorer=scorer)
    model = library.taste(SPACE)
    assert not model.used and model.reason.startswith("no better than chance")
    assert model.held_out.n == 30 and model.held_out.p_value >= 0.05
    with_library = scorer.score(texts["sea"][30:32], PROMPT, library=library)
    without = scorer.score(texts["sea"][30:32], PROMPT)
    assert [r["taste"] for r in with_library] == [None, None]
    assert [r["score"] for r in with_library] == pytest.approx([r["score"] for r in without])


def test_thumbs_all_one_way_teach_nothing(tmp_path, scorer):
    library = Library(tmp_path)
    for text in sentences()["sea"][:MIN_RATINGS]:
        library.rate(text, 1, scorer=scorer)
    assert library.taste(SPACE).reason.startswith("every thumb points the same way")


def test_taste_is_the_fourth_part_of_the_score(team, scorer):
    from aigc.scoring.scorer import CreativityScorer

    texts = sentences()
    liked, disliked = texts["sea"][35], texts["money"][35]  # neither was rated
    results = scorer.score([liked, disliked], PROMPT, library=Library(team))
    assert results[0]["taste"] > 0.8 and results[1]["taste"] < 0.2
    assert results[0]["taste_ratings"] == 60 and results[0]["taste_accuracy"] >= 0.9
    for result in results:
        parts = {name: result.get(name) for name in ("relevance", "novelty", "quality", "taste")}
        assert result["score"] == pytest.approx(weighted_geometric_mean(parts, dict.fromkeys(parts, 1.0)))
    blind = CreativityScorer(scorer.manager, weights={"taste": 0}, language_model=None)
    ignored = blind.score([liked, disliked], PROMPT, library=Library(team))
    assert ignored[0]["score"] < results[0]["score"] and ignored[1]["score"] > results[1]["score"]
    assert "taste" not in scorer.score([liked], PROMPT)[0]  # no library, no taste
    with pytest.raises(aigc.ConfigError, match="weights="):
        aigc.score([liked], PROMPT, library=team, weights={"taste": -1})
    with pytest.raises(aigc.ConfigError, match="taste_user= needs a library"):
        aigc.score([liked], PROMPT, taste_user="ann")


def test_one_users_taste(team, scorer):
    anns = Library(team, taste_user="ann")
    model = anns.taste(SPACE)
    assert (model.user, model.thumbs, model.pairs, model.used) == ("ann", 0, 20, True)
    assert model_path(team, SPACE, "ann") != model_path(team, SPACE, None)
    result = scorer.score([sentences()["sea"][36]], PROMPT, library=anns)[0]
    assert result["taste_ratings"] == 20 and result["taste"] > 0.5
    with pytest.raises(aigc.ConfigError, match="a user name is"):  # aigc.score(taste_user=) checks it up front
        aigc.score([sentences()["sea"][36]], PROMPT, library=team, taste_user="ann/..")


def test_best_of_records_the_taste_it_chose_by(team, tmp_path, tiny_gpt2, manager, scorer):
    library = Library(shutil.copytree(team, tmp_path / "team"))
    chosen = aigc.generate(
        "text",
        "The sea",
        model=tiny_gpt2,
        best_of=3,
        seed=2,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=library,
    )[0]
    assert 0 <= chosen.scores["taste"] <= 1 and chosen.scores["taste_ratings"] == 60
    assert chosen.scores["taste_accuracy"] == pytest.approx(library.taste(SPACE).accuracy, abs=1e-4)
    assert chosen.search.library == str(library.path)


def test_aigc_taste_reports_each_space(team, tmp_path):
    result = CliRunner().invoke(cli, ["taste", "--library", str(team)])
    assert result.exit_code == 0, result.output
    assert "60 ratings for the team's taste (20 up, 20 down, 20 choices; 2 user(s))" in result.output
    assert f"{SPACE}: USED, 40 thumbs + 20 choices" in result.output and "held-out accuracy" in result.output
    report = json.loads(CliRunner().invoke(cli, ["taste", "--library", str(team), "--user", "sim", "--json"]).output)
    (space,) = report["spaces"]
    assert report["ratings"] == 40 and space["used"] and space["held_out"]["n"] == 40 and "coef" not in space
    empty = CliRunner().invoke(cli, ["taste", "--library", str(tmp_path / "none")])
    assert "nothing rated yet" in empty.output
    bad = CliRunner().invoke(cli, ["taste", "--library", str(team), "--user", "a/b"])
    assert isinstance(bad.exception, aigc.ConfigError)

"""The scorer's API and loop: aigc.score, best_of ranking, re-sampling to a bar, diverse picks, the library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import aigc
from aigc.scoring.loop import select_diverse, weakest
from aigc.scoring.scorer import CreativityScorer, combine, vendi

PROMPT = "A lighthouse keeper finds a door in the sea"


@pytest.fixture(scope="module")
def scorer():
    from aigc.runtime.devices import DeviceManager

    return CreativityScorer(DeviceManager("cpu"), language_model=None)  # text parts without the LM: fast


def test_score_returns_parts_in_range_for_raw_items(scorer):
    results = scorer.score(["The keeper found a door floating by the lighthouse.", "Stocks fell today."], PROMPT)
    for r in results:
        for part in ("relevance", "novelty", "quality", "score"):
            assert 0.0 <= r[part] <= 1.0
    assert results[0]["relevance"] > results[1]["relevance"]


def test_public_score_accepts_assets_and_uses_their_prompt(tiny_dcgan, manager):
    faces = aigc.generate("image", "a face", backend="gan", model=tiny_dcgan, n=2, seed=1, manager=manager)
    results = aigc.score(faces, manager=manager)
    assert len(results) == 2 and all(0 <= r["score"] <= 1 for r in results)
    assert results[0]["novelty.candidates"] == pytest.approx(results[1]["novelty.candidates"])


def test_bad_score_requests_are_explained(scorer):
    with pytest.raises(aigc.ConfigError, match="cannot score a int"):
        scorer.score([3], PROMPT)
    with pytest.raises(aigc.ConfigError, match="one kind at a time"):
        scorer.score(["text", (np.zeros(100, np.float32), 8000)], PROMPT)
    with pytest.raises(aigc.ConfigError, match="weights"):
        CreativityScorer(weights={"beauty": 1.0})
    with pytest.raises(aigc.ConfigError, match="is empty"):
        aigc.score(["x"], prompt=" ")


def test_the_score_is_a_weighted_geometric_mean():
    assert combine(
        {"relevance": 1.0, "novelty": 0.25, "quality": None}, {"relevance": 1, "novelty": 1, "quality": 1}
    ) == pytest.approx(0.5)
    assert (
        combine({"relevance": 0.0, "novelty": 1.0, "quality": 1.0}, {"relevance": 1, "novelty": 1, "quality": 1}) < 0.05
    )
    assert combine(
        {"relevance": 0.2, "novelty": 1.0, "quality": 1.0}, {"relevance": 0, "novelty": 1, "quality": 1}
    ) == pytest.approx(1.0)  # a zero weight leaves a part out


def test_vendi_diversity_counts_distinct_items():
    same = np.tile(np.eye(4)[:1], (4, 1))
    distinct = np.eye(4)
    assert vendi(same) == pytest.approx(0.0, abs=1e-6) and vendi(distinct) == pytest.approx(1.0)


def test_best_of_returns_the_top_scoring_candidates_ranked(tiny_gpt2, manager, scorer):
    chosen = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        best_of=5,
        n=2,
        seed=3,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=False,
    )
    everything = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        best_of=5,
        n=5,
        seed=3,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=False,
    )
    assert [a.rank for a in everything] == [1, 2, 3, 4, 5] and all(a.candidates == 5 for a in everything)
    assert [a.score for a in everything] == sorted((a.score for a in everything), reverse=True)
    assert [a.data for a in chosen] == [a.data for a in everything[:2]]
    assert {a.seed for a in everything} == {3, 4, 5, 6, 7}
    alone = aigc.generate("text", PROMPT, model=tiny_gpt2, seed=everything[0].seed, max_new_tokens=8, manager=manager)
    assert alone[0].data == everything[0].data  # each candidate's seed reproduces it alone


def test_min_score_resamples_until_the_bar_or_the_budget(tiny_gpt2, manager, scorer):
    reachable = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        min_score=0.0,
        seed=1,
        max_new_tokens=6,
        manager=manager,
        scorer=scorer,
        library=False,
    )[0]
    assert reachable.attempts == 1 and reachable.search.met_min_score
    out_of_reach = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        min_score=0.999,
        max_attempts=3,
        best_of=2,
        seed=1,
        max_new_tokens=6,
        manager=manager,
        scorer=scorer,
        library=False,
    )[0]
    path = out_of_reach.search.rounds
    assert [step.attempt for step in path] == [1, 2, 3] and out_of_reach.candidates == 6
    assert not out_of_reach.search.met_min_score
    temperatures = [step.knobs["temperature"] for step in path]
    assert temperatures[0] == 0.7 and temperatures[1] != temperatures[0]  # knobs moved between attempts
    again = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        min_score=0.999,
        max_attempts=3,
        best_of=2,
        seed=1,
        max_new_tokens=6,
        manager=manager,
        scorer=scorer,
        library=False,
    )[0]
    assert again.data == out_of_reach.data and again.search.rounds == path  # deterministic for a seed


def test_nudges_follow_the_weakest_part():
    """The nudges each backend declares on its knobs (text temperature, diffusion guidance, GAN truncation)."""
    from aigc.generators.image.diffusion import DiffusionGenerator
    from aigc.generators.image.gan import GANGenerator
    from aigc.generators.text.causal_lm import CausalLMGenerator

    def nudge(knobs, scores):
        part = weakest(scores)
        moved = {}
        for backend in (CausalLMGenerator, DiffusionGenerator, GANGenerator):
            mine = {k: v for k, v in knobs.items() if k in backend.params}
            moved |= backend.nudged(mine, part)
        return moved

    knobs = {"temperature": 0.7, "guidance": 7.5, "truncation": 0.8}
    low_novelty = nudge(knobs, {"relevance": 0.9, "novelty": 0.1, "quality": 0.8})
    low_relevance = nudge(knobs, {"relevance": 0.1, "novelty": 0.9, "quality": 0.8})
    assert low_novelty["temperature"] > 0.7 and low_novelty["guidance"] < 7.5 and low_novelty["truncation"] > 0.8
    assert low_relevance["temperature"] < 0.7 and low_relevance["guidance"] > 7.5


def test_diverse_picks_avoid_near_duplicates():
    class Scored:
        def __init__(self, score):
            self.score = score

    items = [Scored(0.9), Scored(0.89), Scored(0.5)]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    picked = select_diverse(items, vectors, 2)
    assert picked == [items[0], items[2]]


def test_diverse_generation_returns_a_more_varied_set(tiny_gpt2, manager, scorer):
    plain = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        best_of=6,
        n=3,
        seed=2,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=False,
    )
    varied = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        best_of=6,
        n=3,
        seed=2,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=False,
        diverse=True,
    )
    assert scorer.diversity(varied) >= scorer.diversity(plain)


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(best_of=0), "best_of=0 must be a whole number >= n"),
        (dict(best_of=2, n=3), "best_of=2 must be a whole number >= n"),
        (dict(min_score=1.5), "min_score=1.5 must be a number between 0 and 1"),
        (dict(max_attempts=3), "only matters with min_score"),
        (dict(min_score=0.5, max_attempts=0), "max_attempts=0"),
        (dict(diverse=True), "also pass best_of"),
        (dict(best_of=2, seed=[1, 2]), "pass one int seed"),
    ],
)
def test_bad_loop_arguments_fail_before_loading(manager, call, message):
    with pytest.raises(aigc.ConfigError, match=message):
        aigc.generate("text", PROMPT, manager=manager, **call)
    assert manager.stats()["loads"] == 0


def test_accepted_assets_join_the_library_and_later_ones_are_judged_against_it(tiny_gpt2, manager, scorer, tmp_path):
    library = aigc.Library(tmp_path / "lib")
    first = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        best_of=2,
        seed=5,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=library,
    )[0]
    assert len(library) == 1
    again = scorer.score([first.data], PROMPT, library=library)[0]
    assert again["novelty.library"] == pytest.approx(0.0, abs=1e-5)  # a copy of what the team already has
    reopened = aigc.Library(tmp_path / "lib")
    assert len(reopened) == 1  # persisted
    aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        best_of=2,
        seed=5,
        max_new_tokens=8,
        manager=manager,
        scorer=scorer,
        library=False,
    )
    assert len(reopened) == 1  # library=False opts out


def test_two_processes_writing_one_library_lose_nothing(tmp_path):
    script = textwrap.dedent(f"""
        import aigc
        library = aigc.Library({str(tmp_path / "shared")!r})
        for i in range(10):
            library.add_vectors("test:space", [[float(i), 1.0]], [f"item {{i}}"])
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert all(w.wait(timeout=120) == 0 for w in workers)
    library = aigc.Library(tmp_path / "shared")
    assert len(library) == 20 and library.vectors("test:space").shape == (20, 2)


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path):
    library = aigc.Library(tmp_path)
    library.add_vectors("s", np.ones((2, 3), np.float32), ["a", "b"])
    with open(tmp_path / "library.jsonl", "ab") as handle:
        handle.write(b'{"space": "s", "vec')  # a crash mid-write
    assert len(aigc.Library(tmp_path)) == 2


@pytest.mark.pack
def test_gan_refinement_climbs_toward_the_prompt_and_keeps_faces(manager):
    prompt = "a person wearing sunglasses"
    scorer = CreativityScorer(manager, language_model=None)
    before = aigc.generate("image", prompt, backend="gan", n=3, seed=10, manager=manager)
    after = aigc.generate("image", prompt, backend="gan", n=3, seed=10, refine=12, manager=manager, scorer=scorer)
    for asset in after:
        record = asset.refinement
        assert record.steps == 12 and record.objective_after > record.objective_before
        assert asset.params["refine"] == 12 and "objective" not in asset.params
    relevance_before = np.mean([r["relevance"] for r in scorer.score(before, prompt)])
    relevance_after = np.mean([r["relevance"] for r in scorer.score(after, prompt)])
    assert relevance_after > relevance_before
    from aigc.scoring.quality import image_quality

    assert all(image_quality(a.data)["contrast"] > 0.5 for a in after)  # still pictures, not washed out
    with pytest.raises(aigc.ConfigError, match="refine= and frames= do not combine"):
        aigc.generate("image", prompt, backend="gan", frames=3, refine=2, manager=manager, scorer=scorer)


def test_a_missing_language_model_is_said_not_hidden(manager):
    scorer = CreativityScorer(manager, language_model="./no/such/lm")
    with pytest.warns(UserWarning, match="fluency and obvious-continuation novelty are not measured"):
        result = scorer.score(["A short text about the sea."], "the sea")[0]
    assert "quality.fluency" not in result and "novelty.obvious" not in result


def test_attempts_counts_the_rounds_the_search_took(tiny_gpt2, manager, scorer):
    """`attempts` is how many rounds the search ran, whichever round the chosen asset came from."""
    chosen = aigc.generate(
        "text",
        PROMPT,
        model=tiny_gpt2,
        min_score=0.999,
        max_attempts=3,
        best_of=3,
        n=3,
        seed=1,
        max_new_tokens=6,
        manager=manager,
        scorer=scorer,
    )
    assert {a.attempts for a in chosen} == {3} and {a.search.attempts for a in chosen} == {3}
    rounds = [a.search.round for a in chosen]  # the round each one was made in is kept too
    assert set(rounds) <= {1, 2, 3} and min(rounds) < 3  # (with this seed, some came from an earlier round)


def test_best_of_without_a_library_chooses_the_same_way_every_time(tiny_gpt2, manager, scorer, tmp_path):
    call = dict(model=tiny_gpt2, best_of=3, seed=5, max_new_tokens=8, manager=manager, scorer=scorer)
    first, again = (aigc.generate("text", PROMPT, **call)[0] for _ in range(2))
    assert (first.seed, first.data, first.score) == (again.seed, again.data, again.score)
    assert (first.search.library, first.search.library_size) == (None, 0)
    library = tmp_path / "team"
    judged = [aigc.generate("text", PROMPT, library=library, **call)[0] for _ in range(2)]
    assert [(a.search.library, a.search.library_size) for a in judged] == [(str(library), 0), (str(library), 1)]
    assert judged[1].scores["novelty.library"] < 1  # the second call was judged against the first's choice
    saved = aigc.load(judged[1].save(tmp_path / "judged.txt"))
    assert saved.search == judged[1].search  # the record explains (and replays) the choice

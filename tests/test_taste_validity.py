"""Does the taste model learn a team's taste? Ratings made by a hidden rule, real models end to end: the learned
taste must order held-out pairs by the rule at least 80% of the time, and best_of with taste must pick what the
rule likes measurably more often than without. The slowest taste tests (about a minute each on 2 cores)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

import aigc
from aigc.generators.text.causal_lm import CausalLMGenerator
from aigc.media.assets import Asset
from aigc.scoring.library import Library
from aigc.scoring.loop import Policy, round_seeds, search

RANK = {"sea": 2, "other": 1, "money": 0}  # the simulated team: likes the sea, dislikes money


@pytest.fixture(scope="module")
def scorer():
    from aigc.runtime.devices import DeviceManager
    from aigc.scoring.scorer import CreativityScorer

    return CreativityScorer(DeviceManager("cpu"), language_model=None)


def _split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rows = [
        tuple(line.split("\t"))
        for line in (Path(__file__).parent / "data" / "taste_sentences.tsv").read_text().splitlines()
    ]
    random.Random(7).shuffle(rows)
    train = [r for topic in RANK for r in [x for x in rows if x[0] == topic][:20]]
    return train, [r for r in rows if r not in train]


def _ordered(values: np.ndarray, ranks: list[float]) -> tuple[int, int]:
    """How many of the held-out pairs the rule orders (ranks differ) the values order the same way."""
    pairs = [(i, j) for i, j in itertools.combinations(range(len(ranks)), 2) if ranks[i] != ranks[j]]
    right = sum((values[i] > values[j]) == (ranks[i] > ranks[j]) for i, j in pairs)
    return right, len(pairs)


def test_a_team_that_likes_the_sea_and_not_money(tmp_path, scorer):
    train, held_out = _split()
    rng = random.Random(0)
    library = Library(tmp_path / "team")
    for topic, text in train:  # thumbs where the rule has an opinion, choices where it orders two
        if topic != "other":
            library.rate(text, 1 if topic == "sea" else -1, user="sim", scorer=scorer)
    for _ in range(30):
        (a_topic, a), (b_topic, b) = rng.sample([r for r in train], 2)
        if a_topic != b_topic:
            library.prefer(a, b, user="sim", scorer=scorer) if RANK[a_topic] > RANK[b_topic] else library.prefer(
                b, a, user="sim", scorer=scorer
            )
    model = library.taste("text:pack:minilm")
    assert model.used and model.held_out.accuracy >= 0.8

    vectors = np.stack([v for _, v in scorer.embed([text for _, text in held_out])])
    right, total = _ordered(model.score(vectors), [RANK[topic] for topic, _ in held_out])
    print(
        f"\ntext taste: held-out pairs ordered by the rule {right}/{total} = {right / total:.1%}; cross-validated "
        f"on {model.ratings} ratings {model.held_out.accuracy:.1%}"
    )
    assert right / total >= 0.8

    with_taste, without = _best_of_picks(held_out, library, scorer)
    both = (
        sum(a and not b for a, b in zip(with_taste, without, strict=True)),
        sum(b and not a for a, b in zip(with_taste, without, strict=True)),
    )
    print(
        f"best_of 5, {len(with_taste)} rounds: picks the team likes {sum(with_taste)} with taste, {sum(without)} "
        f"without (rounds only one side got right: {both})"
    )
    assert sum(with_taste) >= sum(without) + 0.25 * len(with_taste)
    assert binomtest(both[0], sum(both), 0.5, alternative="greater").pvalue < 0.01  # a sign test over the rounds


def _best_of_picks(pool: list[tuple[str, str]], library: Library, scorer) -> tuple[list[bool], list[bool]]:
    """best_of=5 through the scorer's own loop, each round's candidates drawn from the held-out texts; whether
    the pick is about the sea, judged with the team's taste and with its weight at 0."""
    from aigc.scoring.scorer import CreativityScorer

    blind = CreativityScorer(scorer.manager, weights={"taste": 0}, language_model=None)
    topic_of = {text: topic for topic, text in pool}
    picks: dict[str, list[bool]] = {"with": [], "without": []}
    for round_index in range(24):
        drawn = random.Random(round_index).sample(pool, 5)

        def produce(seeds: list[int], knobs: dict, drawn: list = drawn) -> list[Asset]:
            return [
                Asset("text", text, "Write one sentence.", seed, "lm", "pool")
                for seed, (_, text) in zip(seeds, drawn, strict=True)
            ]

        for name, judge_with in (("with", scorer), ("without", blind)):

            def judge(assets: list[Asset], judge_with=judge_with) -> None:
                for asset, result in zip(assets, judge_with.score(assets, library=library), strict=True):
                    asset.score, asset.scores = result.pop("score"), result

            chosen = search(
                produce,
                judge,
                lambda assets: None,
                Policy(1, 5, None, 1, False),
                lambda attempt, base=round_index: round_seeds(base, attempt, 5),
                {},
                CausalLMGenerator,
            )
            picks[name].append(topic_of[chosen[0].data] == "sea")
    return picks["with"], picks["without"]


def test_faces_the_classifier_sees_in_sunglasses(tmp_path, scorer):
    from aigc.scoring.vision import imagenet_labels

    faces = aigc.generate("image", "a face", backend="gan", n=140, seed=0, manager=scorer.manager)
    glasses = [i for i, label in enumerate(imagenet_labels()) if "sunglass" in label]
    probabilities, features = scorer._classifier().predict([face.data for face in faces])  # features: the scorer's
    rule = probabilities[:, glasses].sum(axis=1)  # the hidden rule: how surely the classifier sees sunglasses
    train, held_out = slice(0, 100), slice(100, 140)
    median = float(np.median(rule[train]))
    library = Library(tmp_path / "team")
    for face, value in zip(faces[train], rule[train], strict=True):
        library.rate(face, 1 if value > median else -1, user="sim", scorer=scorer)
    model = library.taste("image:efficientnet-lite0")
    assert model.used

    liked = list(rule[held_out] > float(np.median(rule[held_out])))
    right, total = _ordered(model.score(features[held_out]), [float(x) for x in liked])
    print(
        f"\nface taste: held-out liked-vs-not pairs ordered by the rule {right}/{total} = {right / total:.1%}; "
        f"cross-validated on {model.ratings} thumbs {model.held_out.accuracy:.1%}"
    )
    assert right / total >= 0.8

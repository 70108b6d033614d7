"""The scorer judges well: it orders at least 90% of the validation pairs (tests/scorer_validation.py) right."""

from __future__ import annotations

import pytest
from scorer_validation import audio_pairs, evaluate, image_pairs, table, text_pairs

pytestmark = pytest.mark.pack


@pytest.fixture(scope="module")
def scorer():
    from aigc.runtime.devices import DeviceManager
    from aigc.scoring.scorer import CreativityScorer

    return CreativityScorer(DeviceManager("cpu"))


def test_the_scorer_orders_at_least_90_percent_of_known_pairs(scorer):
    pairs = text_pairs() + image_pairs(scorer.manager) + audio_pairs(scorer.manager)
    tally = evaluate(scorer, pairs)
    print("\n" + table(tally))
    right = sum(r for r, _ in tally.values())
    total = sum(t for _, t in tally.values())
    assert total >= 60 and right / total >= 0.9
    for (modality, part), (r, t) in tally.items():  # no part may be a coin toss hidden by the others
        assert r / t >= 0.8, (modality, part, r, t)

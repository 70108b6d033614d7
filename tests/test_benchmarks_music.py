"""The MusicGen benchmark workload on a tiny model: aigc's audio matches stock generate's, at the asked length."""

from __future__ import annotations

import pytest

from benchmarks.music import musicgen


def test_musicgen_workload_matches_stock_generate_at_the_asked_duration(manager):
    stock, ours, same = musicgen(manager, seconds=0.3, tiny=True)
    stock_out, our_out = stock(), ours()
    assert same(stock_out, our_out)
    clip = our_out[0]
    assert stock_out.shape[0] == len(our_out) == 1
    assert stock_out.shape[-1] / clip.sample_rate == pytest.approx(0.3)  # 15 frames at 50 frames/s
    assert clip.duration == pytest.approx(0.3)

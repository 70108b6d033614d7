"""The upscaling benchmark workloads build their networks offline, and aigc's tiled result matches a plain forward."""

from __future__ import annotations

import pytest

from benchmarks.upscale import esrgan


@pytest.mark.parametrize("compact", [False, True])
def test_upscale_workload_matches_a_plain_forward_of_the_whole_image(manager, compact):
    stock, ours, same = esrgan(manager, size=24, compact=compact, tiny=True)
    theirs, mine = stock(), ours()
    assert mine.size == (96, 96) and same(theirs, mine)
    assert not same(theirs, mine.transpose(0))  # a mirrored image is far outside the tolerance

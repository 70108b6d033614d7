"""The editing benchmark workloads build offline, and aigc's edits match the stock diffusers pipelines'."""

from __future__ import annotations

from benchmarks.edits import controlnet_canny, inpaint


def test_inpaint_workload_matches_the_stock_pipeline_under_the_mask(manager):
    stock, ours, same = inpaint(manager, batch=2, steps=2, size=64, tiny=True)
    theirs, mine = stock(), ours()
    assert [image.size for image in mine] == [(64, 64)] * 2
    assert same(theirs, mine)
    assert not same(theirs, mine[::-1])  # the other seed's repaint is far outside the tolerance


def test_controlnet_workload_matches_the_stock_pipeline(manager):
    stock, ours, same = controlnet_canny(manager, batch=2, steps=2, size=64, tiny=True)
    theirs, mine = stock(), ours()
    assert same(theirs, mine)
    assert not same(theirs, mine[::-1])

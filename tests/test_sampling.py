"""Batched counter-based sampling: right distribution, per-row independence, filters respected."""

from __future__ import annotations

import torch

from aigc.generators.text.sampling import Sampling, gumbel, stream_keys

PROBS = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])


def test_draws_follow_the_softmax_across_seeds_and_across_steps():
    sampling, logits = Sampling(temperature=1.0), PROBS.log()[None]
    draws = 20_000
    across_seeds = sampling.pick(logits.expand(draws, -1), stream_keys(range(draws)), step=3)
    one_seed = torch.stack([sampling.pick(logits, stream_keys([42]), step) for step in range(4000)])[:, 0]
    for picks, total in ((across_seeds, draws), (one_seed, 4000)):
        freq = torch.bincount(picks, minlength=5).float() / total
        sigma = (PROBS * (1 - PROBS) / total).sqrt()
        assert ((freq - PROBS).abs() <= 5 * sigma).all(), (freq, PROBS)


def test_temperature_sharpens_and_flattens():
    logits = PROBS.log()[None].expand(8000, -1)
    keys = stream_keys(range(8000))
    for temperature in (0.3, 1.0, 3.0):
        expected = (PROBS ** (1 / temperature) / (PROBS ** (1 / temperature)).sum())[0].item()
        share_of_top = (Sampling(temperature=temperature).pick(logits, keys, 0) == 0).float().mean().item()
        assert abs(share_of_top - expected) < 0.03, (temperature, share_of_top, expected)


def test_top_k_and_top_p_never_pick_a_dropped_token():
    logits = PROBS.log()[None].expand(5000, -1)
    keys = stream_keys(range(5000))
    assert set(Sampling(top_k=2).pick(logits, keys, 0).tolist()) == {0, 1}
    assert set(Sampling(top_p=0.7).pick(logits, keys, 0).tolist()) == {0, 1}  # 0.5 + 0.25 reaches 0.7
    assert set(Sampling(top_k=4, top_p=0.8).pick(logits, keys, 0).tolist()) == {0, 1, 2}


def test_greedy_is_argmax_and_ignores_the_keys():
    logits = torch.randn(6, 100)
    assert torch.equal(Sampling(temperature=0).pick(logits, stream_keys(range(6)), 0), logits.argmax(-1))


def test_a_rows_draw_depends_only_on_its_own_seed_step_and_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 1000)
    alone = Sampling().pick(logits[2:3], stream_keys([77]), 5)
    in_batch = Sampling().pick(logits, stream_keys([1, 2, 77, 4]), 5)
    assert in_batch[2] == alone[0]
    others_changed = Sampling().pick(torch.cat([torch.randn(2, 1000), logits[2:]]), stream_keys([9, 8, 77, 4]), 5)
    assert others_changed[2] == alone[0]


def test_streams_seeds_and_steps_give_unrelated_noise():
    keys = stream_keys([1, 2], streams=3)
    assert keys.shape == (6,) and len(set(keys.tolist())) == 6
    ids = torch.arange(2000)[None].expand(6, -1)
    noise = gumbel(keys, 0, ids)
    assert abs(noise.mean().item() - 0.5772) < 0.05 and abs(noise.std().item() - 1.2826) < 0.05
    later = gumbel(keys, 1, ids)
    assert abs(torch.corrcoef(torch.stack([noise.flatten(), later.flatten()]))[0, 1]) < 0.05
    assert stream_keys([2**64 + 5]).equal(stream_keys([5]))  # seeds are taken modulo 2**64

"""Batched sampling with per-output randomness: Gumbel-max over counter-based noise.

Every output must draw its own random numbers, so that an output with seed s is the same alone or in a
batch. One torch.Generator per output does that, but costs one small draw per row per step, which on a
GPU means many tiny kernels (and no CUDA graph). Here the noise is a pure function of
(seed, stream, step, token id): a 32-bit integer hash computed with ordinary tensor arithmetic for the
whole batch at once. The draw is then argmax(logits + Gumbel noise), which picks token i with probability
softmax(logits)_i. Properties users rely on:

- batch independence: a row's noise never depends on the other rows;
- no host reads and no generator state: a decoding step can run inside a CUDA graph or torch.compile;
- the same tokens on CPU and GPU whenever the logits agree (integer arithmetic is exact everywhere).

Only the candidate tokens (the top-k) get noise, so the cost is tiny next to the model's forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

_MASK = 0xFFFFFFFF
_MULTIPLIER = 0x45D9F3B  # < 2**31, so a 32-bit value times it fits in int64 without overflow


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Scramble 32-bit values held in int64 (xor-shift-multiply rounds; every output bit depends on every input bit)."""
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIER) & _MASK
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIER) & _MASK
    return x ^ (x >> 16)


def stream_keys(seeds: Sequence[int], streams: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """One 32-bit key per (seed, stream), in row order seed-major: [seed0 stream0, seed0 stream1, ...].

    A stream is an independent sequence of draws under one seed (MusicGen draws one code per codebook).
    Seeds may be any Python int; they are taken modulo 2**64.
    """
    lows = torch.tensor([seed & _MASK for seed in seeds], dtype=torch.int64)
    highs = torch.tensor([(seed >> 32) & _MASK for seed in seeds], dtype=torch.int64)
    keys = _mix(_mix(lows) ^ highs)
    keys = keys.repeat_interleave(streams) ^ torch.arange(streams, dtype=torch.int64).repeat(len(seeds))
    return _mix(keys).to(device)


def gumbel(keys: torch.Tensor, step: int | torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise for each row's candidate tokens at one step: shape of `token_ids` ([rows, k])."""
    step_keys = _mix(keys ^ _mix(torch.as_tensor(step, dtype=torch.int64, device=keys.device) & _MASK))
    bits = _mix(step_keys[:, None] ^ _mix(token_ids.to(torch.int64) & _MASK))
    uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # 24 random bits, strictly in (0, 1)
    return -torch.log(-torch.log(uniform))


@dataclass(frozen=True)
class Sampling:
    """Temperature, top-k and top-p over a batch of logits; temperature 0 is greedy decoding."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled logits and token ids of the tokens each row may pick ([rows, k]); -inf marks dropped ones."""
        logits = logits.float() / self.temperature
        vocab = logits.shape[-1]
        if 0 < self.top_k < vocab:
            values, ids = torch.topk(logits, self.top_k, dim=-1)  # sorted, most likely first
        elif self.top_p < 1.0:
            values, ids = torch.sort(logits, dim=-1, descending=True)
        else:
            return logits, torch.arange(vocab, device=logits.device).expand_as(logits)
        if self.top_p < 1.0:
            probs = values.softmax(dim=-1)
            drop = probs.cumsum(dim=-1) - probs > self.top_p  # keep the smallest set reaching top_p
            values = values.masked_fill(drop, float("-inf"))
        return values, ids

    def pick(self, logits: torch.Tensor, keys: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
        """One token id per row: argmax under greedy decoding, else a draw seeded by (key, step, token)."""
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        values, ids = self.candidates(logits)
        chosen = (values + gumbel(keys, step, ids)).argmax(dim=-1, keepdim=True)
        return ids.gather(-1, chosen)[:, 0]

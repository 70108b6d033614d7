"""One Llama decoder layer as plain functions over tensors: the packed CPU path's arithmetic (packed_llama.py
holds the weights and the cache), run from TorchScript.

Why TorchScript: besides its four matmuls, a layer makes ~25 small ops (norms, the rotation, the cache write,
attention over one query), and from Python each costs ~1 us of dispatch: 0.7 ms of SmolLM2's ~5 ms token at
batch 1. `torch.compile` would fuse them, but it compiles for 38-85 s in every new process on a 2-core CPU, far
over the 5 s a first call may take; TorchScript runs the very same ops, unfused, from C++ after ~0.2 s of
compiling, and a token takes ~14% less. It is deprecated in torch 2.13, so `compiled()` falls back to these
functions as Python wherever it is missing or fails: the same ops in the same order, the same bits (tested).

No `from __future__ import annotations` here: TorchScript reads the annotations themselves.
"""

import functools
import logging
import warnings
from collections.abc import Callable

import torch

log = logging.getLogger("aigc")


def linear(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor) -> torch.Tensor:
    """x @ W.T, bf16 in and out, with W as torch's packed int4 codes and their scales/zeros in groups of 32
    inputs (Q4_1's block: quantize.GROUP)."""
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), packed, 32, scales_zeros)


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """RMSNorm in five single ops (torch.rms_norm is a composite of nine on a CPU); fp32."""
    norm = torch.linalg.vector_norm(hidden, 2.0, [-1], True)
    return hidden * torch.rsqrt(torch.addcmul(eps, norm, norm, value=1.0 / hidden.shape[-1])) * weight


def attend(query: torch.Tensor, kv_cache: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v for [rows * kv heads, queries a kv head, dim] queries (already scaled) over a [2, rows,
    kv heads, keys, dim] slice of the cache; each row's keys reshape to the batch of bmm without a copy."""
    flat = [query.shape[0], kv_cache.shape[3], kv_cache.shape[4]]
    scores = torch.bmm(query, kv_cache[0].reshape(flat).transpose(1, 2))
    return torch.bmm(scores.softmax(-1), kv_cache[1].reshape(flat))


def attend_step(
    query: torch.Tensor, kv_cache: torch.Tensor, end: int, groups: list[tuple[int, torch.Tensor]], kv: int
) -> torch.Tensor:
    """One new query a row, [rows, heads, dim], over each row's filled cache [pad, end) -> [rows, heads * dim].
    Rows with the same padding attend in one call: the shapes each would get alone."""
    rows, dim = query.shape[0], query.shape[2]
    if len(groups) == 1:  # the usual case: every row has the same padding
        pad = groups[0][0]
        return attend(query.reshape(rows * kv, -1, dim), kv_cache[:, :, :, pad:end]).view(rows, -1)
    query = query.reshape(rows, kv, -1, dim)
    out = torch.empty_like(query)
    for pad, members in groups:
        part = query.index_select(0, members)
        cache = kv_cache[:, :, :, pad:end].index_select(1, members)
        out.index_copy_(0, members, attend(part.reshape(-1, part.shape[2], dim), cache).view(part.shape))
    return out.view(rows, -1)


def attend_prompt(
    query: torch.Tensor, kv_cache: torch.Tensor, end: int, groups: list[tuple[int, torch.Tensor]], gqa: bool
) -> torch.Tensor:
    """The prompts' queries, [rows, width, heads, dim], causally over themselves -> [rows * width, heads * dim];
    a padding position's output is zero (never read)."""
    rows, width = query.shape[0], query.shape[1]
    query = query.transpose(1, 2)
    out = torch.zeros_like(query)
    for pad, members in groups:
        keys_values = kv_cache[:, :, :, pad:end].index_select(1, members)
        attended = torch.zeros_like(query.index_select(0, members))
        attended[:, :, pad:] = torch.nn.functional.scaled_dot_product_attention(
            query.index_select(0, members)[:, :, pad:],
            keys_values[0],
            keys_values[1],
            is_causal=True,
            scale=1.0,
            enable_gqa=gqa,
        )
        out.index_copy_(0, members, attended)
    return out.transpose(1, 2).reshape(rows * width, -1)


def layer(
    hidden: torch.Tensor,
    rotation: torch.Tensor,
    kv_cache: torch.Tensor,
    start: int,
    rows: int,
    groups: list[tuple[int, torch.Tensor]],
    weights: list[torch.Tensor],
    eps: torch.Tensor,
    heads: int,
    kv: int,
) -> torch.Tensor:
    """One layer over [rows * width tokens, hidden] fp32; writes its rotated keys and values at `start`.

    `weights`: attention norm, qkv (packed codes, scales/zeros), out (2), MLP norm, gate/up (2), down (2).
    `rotation` (complex, [tokens, heads + 2 kv heads, dim / 2]) turns the fused
    q/k/v in one multiply: q scaled by 1/sqrt(dim), v by exactly 1."""
    tokens = hidden.shape[0]
    width = tokens // rows
    qkv = linear(rms_norm(hidden, weights[0], eps), weights[1], weights[2]).float()
    qkv = qkv.view(tokens, rotation.shape[1], -1, 2)
    rotated = torch.view_as_real(torch.view_as_complex(qkv) * rotation).view(tokens, rotation.shape[1], -1)
    dim = rotated.shape[2]
    if width == 1:
        kv_cache[:, :, :, start] = rotated[:, heads:].view(rows, 2, kv, dim).transpose(0, 1)
        attended = attend_step(rotated[:, :heads], kv_cache, start + 1, groups, kv)
    else:
        kv_cache[:, :, :, start : start + width] = (
            rotated[:, heads:].view(rows, width, 2, kv, dim).permute(2, 0, 3, 1, 4)
        )
        attended = attend_prompt(
            rotated[:, :heads].view(rows, width, heads, dim), kv_cache, start + width, groups, heads != kv
        )
    hidden = hidden + linear(attended, weights[3], weights[4])
    gate_up = linear(rms_norm(hidden, weights[5], eps), weights[6], weights[7])
    half = gate_up.shape[-1] // 2
    return hidden + linear(torch.nn.functional.silu(gate_up[:, :half]) * gate_up[:, half:], weights[8], weights[9])


@functools.cache
def compiled() -> Callable[..., torch.Tensor]:
    """`layer` compiled to TorchScript once per process, or `layer` itself where TorchScript is unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit; see above
            return torch.jit.script(layer)
    except Exception as error:  # noqa: BLE001 - any failure to compile leaves the same function, in Python
        log.info("aigc: the packed decoder runs its layers in Python (TorchScript: %s)", error)
        return layer

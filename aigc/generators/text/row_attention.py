"""Attention that gives a row the same numbers alone or in a left-padded batch, down to the last bit.

Batched prompts are left-padded; stock attention then reduces each row over the padded key length, so a row's
real keys sit at other offsets than when it runs alone, and the sums round differently. In fp32 that is a
difference of ~1e-7 and rarely changes a token; in bf16 (the packed CPU path) it is one unit in the last
place, often enough to change sampled text. Here each row attends over its own keys only (the padding sliced
off), with the same call it gets alone, so same seed, same output in any batch. A transformers attention
function (registered once), used by the models decoding.py runs packed; the rows' padding comes from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NAME = "aigc_rows"
_registered = False


def use_rowwise_attention(model: PreTrainedModel) -> None:
    """Switch `model` (a transformers model) to row-by-row attention."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, rowwise_attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # for calls that name no padding (then plain sdpa)
        _registered = True
    model.set_attn_implementation(NAME)


def uses_rowwise_attention(model: torch.nn.Module) -> bool:
    """Whether `model` reads each row's padding (aigc_pads): this attention, or a PackedLlama."""
    return getattr(model, "takes_row_pads", False) or getattr(model.config, "_attn_implementation", None) == NAME


def rowwise_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    aigc_pads: list[int] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query [rows, heads, q, dim], key/value [rows, kv heads, k, dim] -> ([rows, q, heads, dim], None).

    `aigc_pads[r]`: how many leading cache positions of row r are padding. The queries are the newest q of
    the k positions (a prefill from an empty cache, or one new token a step)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows, _, length, _ = query.shape
    keys = key.shape[2]
    if aigc_pads is None or (length > 1 and length != keys) or dropout:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    out = query.new_zeros(query.shape)  # a padding position's output is never read
    gqa = key.shape[1] != query.shape[1]
    for row, pad in enumerate(aigc_pads):
        first = max(0, pad - (keys - length))
        q = query[row : row + 1, :, first:]
        out[row : row + 1, :, first:] = torch.nn.functional.scaled_dot_product_attention(
            q,
            key[row : row + 1, :, pad:],
            value[row : row + 1, :, pad:],
            is_causal=q.shape[2] > 1,
            scale=scaling,
            enable_gqa=gqa,
        )
    return out.transpose(1, 2).contiguous(), None

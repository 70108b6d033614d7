"""A Llama decoder for the packed CPU path: the GGUF's own int4 codes, one kernel call where transformers makes
three (q, k, v) or two (gate, up), a KV cache that grows in chunks, and attention over each row's own keys.

Why not transformers' forward: at batch 1 a CPU step of SmolLM2 spent more time in Python and small ops (the
mask, the cache's concatenation, rotary angles recomputed per call, flash attention set up for one query) than
in its matmuls, and at batch 8 flash attention for one query row cost more than every linear together. Here a
layer is ~25 small ops besides its 4 matmuls (llama_layer.py, run from TorchScript), the rotary angles come from
a table and turn q, k (and, by exactly 1, v) in one complex multiply, and a step's attention is two bmm calls.
Numbers: the residual stream, norms, rotation and attention run in fp32 (as transformers' fp32 path does); only
the packed linears take bf16 inputs, which their kernels need.

Same seed, same output in any batch: rows with the same padding attend in one call over exactly their own keys
(the shapes a row gets alone; the kernels compute a batch element the same way whatever the batch), and every
other op works row by row; every linear is int4 (a bf16 one would not be row-independent). A
transformers-shaped forward (input_ids, position_ids, past_key_values -> .logits, .past_key_values) lets
decoding.py and the scorer use it as they use any causal LM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch

from . import llama_layer

CHUNK = 256  # the cache grows by this many positions when full: a copy per 256 tokens, not a cat per token
ROPE_TYPES = ("default", "linear", "llama3")  # angles fixed per position; "dynamic" ones change with the length


def supports(config: Any) -> bool:
    """Whether this decoder computes what a transformers model of this config computes (a config as
    transformers 5 saves it: the rope in `rope_parameters`, not the older `rope_scaling`)."""
    rope = getattr(config, "rope_parameters", None)
    return (
        getattr(config, "model_type", None) == "llama"
        and isinstance(rope, dict)
        and rope.get("rope_type", "default") in ROPE_TYPES
        and getattr(config, "architectures", None) in (None, ["LlamaForCausalLM"])
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "hidden_act", "silu") == "silu"
    )


@dataclass
class KVCache:
    """Each layer's rotated keys and its values in one tensor, [2, rows, kv heads, capacity, head dim] fp32 (one
    write a step, and each half reshapes to [rows * kv heads, ...] without a copy); `length` positions filled."""

    layers: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, layers: int, rows: int, kv_heads: int, head_dim: int) -> KVCache:
        return cls([torch.empty((2, rows, kv_heads, 0, head_dim)) for _ in range(layers)])

    def reserve(self, more: int) -> None:
        """Room for `more` positions, grown by whole chunks."""
        if self.length + more <= self.layers[0].shape[3]:
            return
        capacity = -(-(self.length + more + CHUNK) // CHUNK) * CHUNK
        for index, old in enumerate(self.layers):
            grown = old.new_empty((*old.shape[:3], capacity, old.shape[4]))
            grown[:, :, :, : self.length] = old[:, :, :, : self.length]
            self.layers[index] = grown


class Int4Codes(Protocol):
    """What a layer reads of a packed int4 linear (quantize.Int4Linear, an nn.Module; quantize imports this)."""

    packed: torch.Tensor  # the 4-bit codes in the CPU kernel's layout
    scales_zeros: torch.Tensor


class Int8Rows(Protocol):
    """The packed output layer (quantize.Int8Linear, an nn.Module): int8 rows and their scales."""

    weight: torch.Tensor
    scales: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Output:
    """What a transformers causal LM returns, the parts aigc reads."""

    logits: torch.Tensor
    past_key_values: KVCache


class Layer(torch.nn.Module):
    """One decoder layer: attention with fused q/k/v, then the gated MLP with fused gate/up."""

    attn_norm: torch.Tensor  # buffers
    mlp_norm: torch.Tensor

    def __init__(
        self,
        qkv: Int4Codes,
        out: Int4Codes,
        gate_up: Int4Codes,
        down: Int4Codes,
        norms: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        super().__init__()
        self.qkv, self.out, self.gate_up, self.down = qkv, out, gate_up, down
        self.register_buffer("attn_norm", norms[0].detach().float().clone())
        self.register_buffer("mlp_norm", norms[1].detach().float().clone())

    def tensors(self) -> list[torch.Tensor]:
        """What llama_layer.layer takes, in its order: each norm, each packed linear's codes and scales/zeros."""
        return [
            self.attn_norm,
            self.qkv.packed,
            self.qkv.scales_zeros,
            self.out.packed,
            self.out.scales_zeros,
            self.mlp_norm,
            self.gate_up.packed,
            self.gate_up.scales_zeros,
            self.down.packed,
            self.down.scales_zeros,
        ]


class PackedLlama(torch.nn.Module):
    """A Llama causal LM on packed linears (see the module docstring). Made by `from_weights` (quantize.load_packed)."""

    takes_row_pads = True  # decoding.py passes each row's padding (aigc_pads) rather than a mask
    norm: torch.Tensor  # buffers
    rotation: torch.Tensor
    head_scale: torch.Tensor
    eps_tensor: torch.Tensor

    def __init__(
        self,
        config: Any,
        generation_config: Any,
        layers: list[Layer],
        norm: torch.Tensor,
        head: Int8Rows,
        embedding: torch.Tensor | None,
        rotary: torch.Tensor,
    ):
        super().__init__()
        self.config, self.generation_config = config, generation_config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps, self.scale = config.rms_norm_eps, self.head_dim**-0.5
        self.layers = torch.nn.ModuleList(layers)
        self.register_buffer("norm", norm.detach().float().clone())
        self.head = head
        # None: the tied int8 output layer's rows serve as the embedding
        self.embedding = None if embedding is None else torch.nn.Embedding.from_pretrained(embedding, freeze=True)
        self.register_buffer("rotation", rotary, persistent=False)  # e^(i angle) [positions, dim / 2]
        scale = torch.ones(self.heads + 2 * self.kv_heads, 1)
        scale[: self.heads] = self.scale
        self.register_buffer("head_scale", scale, persistent=False)
        self.register_buffer("eps_tensor", torch.tensor(self.eps), persistent=False)
        self._layer = llama_layer.compiled()
        self._bind()

    def _bind(self) -> None:
        """Each layer's tensors as one list, gathered once (not looked up on modules 30 times a step)."""
        self.bound = [cast(Layer, layer).tensors() for layer in self.layers]  # a ModuleList yields Modules

    def _apply(self, fn: Callable, recurse: bool = True) -> PackedLlama:  # .to() and kin: bind the moved tensors
        module = super()._apply(fn, recurse)
        self._bind()
        return module

    @property
    def device(self) -> torch.device:
        return self.norm.device

    def get_output_embeddings(self) -> Int8Rows:
        return self.head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = True,
        cache_position: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        aigc_pads: list[int] | None = None,
    ) -> Output:
        """Logits for the newest tokens of left-padded rows. A prefill starts from an empty cache; after it, one
        token a row at a time. `attention_mask` is read only for the padding when `aigc_pads` is not given."""
        rows, width = input_ids.shape
        cache = past_key_values or KVCache.empty(len(self.layers), rows, self.kv_heads, self.head_dim)
        if cache.length and width != 1:
            raise ValueError("PackedLlama continues a cache one token at a time")
        if aigc_pads is None:
            aigc_pads = [0] * rows if attention_mask is None else (attention_mask == 0).sum(1).tolist()
        if position_ids is None:
            pads = torch.tensor(aigc_pads)[:, None]
            position_ids = (torch.arange(cache.length, cache.length + width)[None] - pads).clamp(min=0)
        cache.reserve(width)
        hidden = self._embed(input_ids.reshape(-1))  # [rows * width, hidden]: every linear sees one flat batch
        rotation = self._rotary(position_ids.reshape(-1))
        groups = _groups(aigc_pads)
        for index, tensors in enumerate(self.bound):
            hidden = self._layer(
                hidden,
                rotation,
                cache.layers[index],
                cache.length,
                rows,
                groups,
                tensors,
                self.eps_tensor,
                self.heads,
                self.kv_heads,
            )
        cache.length += width
        hidden = hidden.view(rows, width, -1)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.head(llama_layer.rms_norm(hidden, self.norm, self.eps_tensor)).float()
        return Output(logits, cache)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(ids).float()
        return self.head.weight[ids].float() * self.head.scales[ids].float()[..., None]

    def _rotary(self, positions: torch.Tensor) -> torch.Tensor:
        """The rotation per token and head, complex [tokens, heads + 2 kv heads, dim / 2], over the fused q/k/v:
        the queries' scaled by 1/sqrt(dim) (so the scores come out scaled) and the values' 1 (left exactly as
        they are), so one multiply rotates everything a layer makes."""
        rotation = self.rotation[positions][:, None] * self.head_scale
        rotation[:, self.heads + self.kv_heads :] = 1.0
        return rotation


def _groups(pads: list[int]) -> list[tuple[int, torch.Tensor]]:
    """Rows by their padding, as (pad, row indices): usually one group, all rows."""
    by_pad: dict[int, list[int]] = {}
    for row, pad in enumerate(pads):
        by_pad.setdefault(pad, []).append(row)
    return [(pad, torch.tensor(rows)) for pad, rows in by_pad.items()]


def from_weights(
    config: Any,
    generation_config: Any,
    dense: Callable[[str], torch.Tensor | None],
    int4: Mapping[str, Int4Codes],
    head: Int8Rows,
) -> PackedLlama:
    """The decoder for a Llama config (`supports`), without transformers' model code: `dense(name)` gives one of
    the checkpoint's tensors by its transformers name (the norms, and the embedding when it is not tied), `int4`
    each fused linear by name ("layers.3.qkv", "layers.3.gate_up", "layers.3.out", "layers.3.down"), every one of
    them (a bf16 linear would give a row other bits in a batch than alone), `head` the packed output layer (int8
    rows and their scales, which also serve as the embedding when the two are tied)."""

    def tensor(name: str) -> torch.Tensor:
        found = dense(name)
        if found is None:
            raise ValueError(f"the checkpoint has no tensor {name!r}")
        return found

    layers = []
    for index in range(config.num_hidden_layers):
        qkv, out, gate_up, down = (int4[f"layers.{index}.{name}"] for name in ("qkv", "out", "gate_up", "down"))
        prefix = f"model.layers.{index}"
        norms = (tensor(f"{prefix}.input_layernorm.weight"), tensor(f"{prefix}.post_attention_layernorm.weight"))
        layers.append(Layer(qkv, out, gate_up, down, norms))
    embedding = None if config.tie_word_embeddings else tensor("model.embed_tokens.weight").to(torch.bfloat16)
    return PackedLlama(
        config,
        generation_config,
        layers,
        tensor("model.norm.weight"),
        head,
        embedding,
        rotary_table(config, config.max_position_embeddings),
    )


def rotary_table(config: Any, positions: int) -> torch.Tensor:
    """e^(i angle) for every position and rotary pair, complex64 [positions, head dim / 2], computed as
    transformers' Llama rotary module computes its cos/sin (the same ops: the same bits; tested), with any
    attention scaling of the rope type in it."""
    rope = config.rope_parameters
    if rope.get("rope_type", "default") == "default":  # transformers keeps this one in the model's own code
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        base = rope["rope_theta"]
        inverse, scaling = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # no model code imported

        inverse, scaling = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config)
    angles = torch.arange(positions)[:, None].float() * inverse.float()
    return torch.complex(angles.cos() * scaling, angles.sin() * scaling).contiguous()


def pair_order(rows: int, head_dim: int) -> torch.Tensor:
    """Row order that puts each head's rotary pair (i, i + dim/2) side by side, as a complex number's parts, for
    q and k: one complex multiply then rotates them. Both get the same order, so every q.k is unchanged."""
    half = head_dim // 2
    within = torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).reshape(-1)
    return (torch.arange(0, rows, head_dim)[:, None] + within).reshape(-1)

"""Weight-only packed linears for CPU decoding, on torch's own kernels: int4 in groups of 32, int8 per row.

Decoding streams every weight once per token, so on a CPU the bytes per token set the speed (fp32 SmolLM2
reads 538 MB a token). The SmolLM2 pack is a Q4_1 GGUF: each block of 32 weights is d * q + m with 4-bit
codes q, which is torch's int4 layout exactly (w = (q - 8) * scale + zero, scale = d, zero = m + 8d). So its
linears are packed from the file's own codes, not re-quantised: the weights are the file's, rounded only by
the bf16 the kernel takes its scales in. The output layer (Q8_0 in the file, tied to the embedding) is
re-packed as int8 per row. Activations are bf16: the int4/int8 kernels are fast only in bf16 on a CPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from . import packed_llama
from .row_attention import use_rowwise_attention

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Model = TypeVar("Model", bound="PreTrainedModel")

log = logging.getLogger("aigc")
BLOCKS_FILE = "q4_1.safetensors"  # in the cache: the file's Q4_1 codes, two a byte, and their fp16 scales
HEAD = "output"  # the output layer's tensors in that cache
_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default
GROUP = 32  # Q4_1's block size, and one of the group sizes torch's int4 kernel takes
FUSED = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),  # one kernel call each (same input)
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "out": ("self_attn.o_proj",),
    "down": ("mlp.down_proj",),
}
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


class Int4Linear(torch.nn.Module):
    """y = x @ W.T with W held as 4-bit codes and a bf16 (scale, zero) per group of 32 input weights."""

    packed: torch.Tensor  # buffers
    scales_zeros: torch.Tensor

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)  # layout per CPU ISA
        self.register_buffer("packed", packed)
        self.register_buffer(
            "scales_zeros", torch.stack([scales, zeros], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        )
        self.bias = None if bias is None else torch.nn.Parameter(bias.to(torch.bfloat16), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = _INT4_MM(flat, self.packed, GROUP, self.scales_zeros).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int8Linear(torch.nn.Module):
    """y = x @ W.T with W held as int8 and one bf16 scale per output row (symmetric, round to nearest)."""

    weight: torch.Tensor  # buffers
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.bias = None if bias is None else torch.nn.Parameter(bias.to(torch.bfloat16), requires_grad=False)

    @classmethod
    def quantise(cls, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """int8 rows and their scales for a float weight."""
        weight = weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        return (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8), scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def q4_1_blocks(gguf: Path, config: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The Q4_1 linears of a Llama-family GGUF as (codes [N, K] uint8, d [N, K/32], m [N, K/32]), keyed by
    the transformers module name, with transformers' row order (it un-permutes q and k for rotary)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader

    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None)
    found = {}
    for tensor in GGUFReader(str(gguf)).tensors:
        if tensor.tensor_type != GGMLQuantizationType.Q4_1 or not tensor.name.startswith("blk."):
            continue
        _, layer, kind, _ = tensor.name.split(".")
        module = next((hf for hf, name in _GGUF_NAMES.items() if name == kind), None)
        if module is None:
            continue
        rows = np.asarray(tensor.data).reshape(tensor.data.shape[0], -1, 20)  # per block: d, m (fp16), 16 bytes
        d = torch.from_numpy(rows[..., :2].copy().view(np.float16)[..., 0]).float()
        m = torch.from_numpy(rows[..., 2:4].copy().view(np.float16)[..., 0]).float()
        packed = torch.from_numpy(rows[..., 4:].copy())
        codes = torch.cat([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)  # low nibbles first
        if kind in ("attn_q", "attn_k"):
            order = _unpermute_rows(codes.shape[0], heads if kind == "attn_q" else (kv_heads or heads))
            codes, d, m = codes[order], d[order], m[order]
        found[f"model.layers.{layer}.{module}"] = (codes, d, m)
    return found


def _unpermute_rows(rows: int, heads: int) -> torch.Tensor:
    """llama.cpp interleaves each head's rotary halves in q and k; transformers' loader undoes it."""
    half = rows // heads // 2
    return torch.arange(rows).reshape(heads, half, 2).transpose(1, 2).reshape(rows)


Blocks = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # module name -> codes [N, K], d, m


PACKED = "int4 (the GGUF's Q4_1 codes), bf16 activations"  # what a packed model runs as, as reports say it


def describe(model: torch.nn.Module, dtype: torch.dtype) -> str:
    """What `model` runs as: packed int4 where its linears were packed, else the dtype it was loaded in."""
    if any(isinstance(module, Int4Linear) for module in model.modules()):
        return PACKED
    return str(dtype).removeprefix("torch.")


def pack_model(model: PreTrainedModel, blocks: Blocks, head: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Swap the model's linears for packed ones, in place: int4 from `blocks` (the file's codes), the output
    layer as int8 (`head`: its rows and scales), everything else in bf16."""
    for name, (codes, d, m) in blocks.items():
        bias = model.get_submodule(name).bias  # an nn.Linear's: a tensor or None
        _replace(model, name, Int4Linear(codes, d, m + 8 * d, bias if isinstance(bias, torch.Tensor) else None))
    output = model.get_output_embeddings()
    if head is not None and isinstance(output, torch.nn.Linear):
        model.set_output_embeddings(Int8Linear(*head, output.bias))
        model.config.tie_word_embeddings = False
    model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers wraps .to in functools.wraps(nn.Module.to)


def load_packed(directory: Path | str, gguf: Path) -> packed_llama.PackedLlama | None:
    """A Llama GGUF as a PackedLlama (fused int4 linears, aigc's own slim forward), built from its converted
    `directory` without transformers' model code: its config is read as a plain `PretrainedConfig`, since
    importing the Llama classes (config included) costs 1.6-4.4 s of a first call. None where this does not
    apply (another architecture, or a linear without Q4_1 codes): load the model and `pack_from_gguf` it."""
    from transformers import GenerationConfig, PretrainedConfig

    config = PretrainedConfig.from_json_file(str(Path(directory) / "config.json"))
    if not packed_llama.supports(config):
        return None
    dense = _checkpoint(Path(directory))
    output = dense("lm_head.weight")
    blocks, head = _blocks(gguf, config, dense, dense("model.embed_tokens.weight") if output is None else output)
    fused = fused_int4(blocks, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    if head is None or len(fused) != 4 * config.num_hidden_layers:
        return None
    try:
        generation = GenerationConfig.from_pretrained(directory)
    except OSError:  # no generation_config.json: what transformers derives from the config
        generation = GenerationConfig.from_model_config(config)
    return packed_llama.from_weights(config, generation, dense, fused, Int8Linear(*head, None))


def pack_from_gguf(model: Model, gguf: Path) -> Model:
    """The GGUF's own Q4_1 codes packed into `model` (loaded from that file's de-quantised copy; any architecture
    whose linears carry the codes), transformers' forward kept, with row-wise attention; the model unchanged
    (fp32) when the file has no Q4_1 linears: a bf16 dense linear would not be row-independent."""
    output = model.get_output_embeddings()

    def weight(name: str) -> torch.Tensor | None:
        try:
            found = model.get_submodule(name.removesuffix(".weight")).weight
        except AttributeError:  # another architecture's names: nothing to pack
            return None
        return found if isinstance(found, torch.Tensor) else None

    blocks, head = _blocks(gguf, model.config, weight, output.weight if isinstance(output, torch.nn.Linear) else None)
    if not blocks:
        return model
    pack_model(model, blocks, head)
    use_rowwise_attention(model)  # bf16 rounding would otherwise make a row's text depend on its batch
    return model


def _blocks(
    gguf: Path, config: object, weight: Callable[[str], torch.Tensor | None], output: torch.Tensor | None
) -> tuple[Blocks, tuple[torch.Tensor, torch.Tensor] | None]:
    """The file's Q4_1 codes and the int8 output layer, from a cache made once per file: parsing a GGUF takes
    ~5 s, the cache ~0.2 s. `weight(name)`: the loaded weight each code must de-quantise to exactly."""
    from ...runtime import models

    cache = models.cached_conversion(gguf, "gguf-int4", lambda out: _write_blocks(gguf, config, weight, output, out))
    return _read_blocks(cache / BLOCKS_FILE)


def _checkpoint(directory: Path) -> Callable[[str], torch.Tensor | None]:
    """A transformers directory's tensors by name, each read from its safetensors file when asked for (the
    packed model needs its norms, not the 538 MB of dense weights)."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    files = json.loads(index.read_text(encoding="utf-8"))["weight_map"] if index.exists() else None
    opened: dict[str, Any] = {}

    def tensor(name: str) -> torch.Tensor | None:
        file = "model.safetensors" if files is None else files.get(name)
        if file is None:
            return None
        if file not in opened:
            opened[file] = safe_open(str(directory / file), framework="pt")
        return opened[file].get_tensor(name) if name in opened[file].keys() else None

    return tensor


def fused_int4(blocks: Blocks, head_dim: int) -> dict[str, Int4Linear]:
    """Each layer's q/k/v and gate/up as one Int4Linear each (their rows stacked; one kernel call, not three),
    q and k rows in PackedLlama's rotary pair order, o and down as they are, keyed "layers.N.qkv" and so on; a
    group with a part not in `blocks` is left out."""
    layers = sorted({int(name.split(".")[2]) for name in blocks})
    fused = {}
    for layer in layers:
        for name, parts in FUSED.items():
            keys = [f"model.layers.{layer}.{part}" for part in parts]
            if not all(key in blocks for key in keys):
                continue
            found: list[tuple[torch.Tensor, ...]] = [blocks[key] for key in keys]
            if name == "qkv":  # q and k: pairs side by side
                found[:2] = [
                    tuple(t[packed_llama.pair_order(t.shape[0], head_dim)] for t in part) for part in found[:2]
                ]
            codes, d, m = (torch.cat([part[i] for part in found]) for i in range(3))
            fused[f"layers.{layer}.{name}"] = Int4Linear(codes, d, m + 8 * d, None)
    return fused


def _write_blocks(
    gguf: Path, config: object, weight: Callable[[str], torch.Tensor | None], output: torch.Tensor | None, out: Path
) -> None:
    """The Q4_1 linears whose codes de-quantise to exactly the loaded weights (checked), two codes a byte, and
    the output layer (`output`) as int8 rows."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (codes, d, m) in q4_1_blocks(gguf, config).items():
        loaded = weight(f"{name}.weight")
        if loaded is None or codes.shape != loaded.shape or codes.shape[0] % 16:  # the kernel takes rows in 16s
            continue
        rebuilt = d.repeat_interleave(GROUP, 1) * codes.float() + m.repeat_interleave(GROUP, 1)
        if not torch.equal(rebuilt, loaded.detach().float()):
            log.warning("aigc: %s does not match its GGUF codes; it stays in bf16.", name)
            continue
        tensors[f"{name}.codes"] = codes[:, 0::2] | (codes[:, 1::2] << 4)
        tensors[f"{name}.d"], tensors[f"{name}.m"] = d.half(), m.half()  # the file's fp16 values, exactly
    if output is not None:
        tensors[f"{HEAD}.int8"], tensors[f"{HEAD}.scales"] = Int8Linear.quantise(output)
    save_file(tensors, str(out / BLOCKS_FILE))


def _read_blocks(path: Path) -> tuple[Blocks, tuple[torch.Tensor, torch.Tensor] | None]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    blocks = {}
    for key in tensors:
        if key.endswith(".codes"):
            name, two = key.removesuffix(".codes"), tensors[key]
            codes = torch.empty((two.shape[0], two.shape[1] * 2), dtype=torch.int32)
            codes[:, 0::2], codes[:, 1::2] = two & 0x0F, two >> 4
            blocks[name] = (codes, tensors[f"{name}.d"].float(), tensors[f"{name}.m"].float())
    # a fresh copy: a tensor read from the file may sit at an unaligned address, which the int8 kernel faults on
    head = (tensors[f"{HEAD}.int8"].clone(), tensors[f"{HEAD}.scales"]) if f"{HEAD}.int8" in tensors else None
    return blocks, head


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)

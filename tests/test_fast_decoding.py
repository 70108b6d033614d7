"""The CPU fast path: a Q4_1 GGUF's own codes packed into torch's int4 kernel (bf16 activations), on a tiny random
Llama saved with save_pretrained and its own tiny GGUF, plus the real SmolLM2 pack: exact weights, batch-independent
outputs, and the fp32 path kept for anyone who asks for a dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import aigc
from aigc.generators.text import quantize
from aigc.generators.text.decoding import Loaded, Settings, decode
from aigc.generators.text.sampling import Sampling
from aigc.runtime.devices import DeviceManager, cpu_has_fast_bf16

needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bf16(), reason="the packed path is for CPUs with fast bf16")


def _llama_cpp_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter interleaves each head's rotary halves in q and k (what transformers undoes)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def _transformers_order(weight: np.ndarray, heads: int) -> np.ndarray:
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama whose linears hold Q4_1 values, saved with save_pretrained, and a GGUF with the codes."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import dequantize
    from gguf.quants import quantize as q4_1
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from aigc.runtime.models import gpt2_tokenizer_dir

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50257,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    writer = GGUFWriter(str(path / "tiny.gguf"), "llama")
    for layer in range(config.num_hidden_layers):
        for module, kind in quantize._GGUF_NAMES.items():
            linear = model.get_submodule(f"model.layers.{layer}.{module}")
            weight = linear.weight.detach().numpy()
            heads = {"attn_q": 4, "attn_k": 2}.get(kind)
            stored = _llama_cpp_order(weight, heads) if heads else weight
            blocks = q4_1(np.ascontiguousarray(stored), GGMLQuantizationType.Q4_1)
            writer.add_tensor(f"blk.{layer}.{kind}.weight", blocks, raw_dtype=GGMLQuantizationType.Q4_1)
            exact = dequantize(blocks, GGMLQuantizationType.Q4_1)  # the weights the file holds, in llama.cpp order
            exact = _transformers_order(exact, heads) if heads else exact
            linear.weight.data = torch.from_numpy(np.ascontiguousarray(exact))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model.save_pretrained(path / "model")
    AutoTokenizer.from_pretrained(gpt2_tokenizer_dir()).save_pretrained(path / "model")
    return path


def _load(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama / "model", dtype=torch.float32).eval()
    return Loaded(model, AutoTokenizer.from_pretrained(tiny_llama / "model"))


def _packed(tiny_llama, route="packed decoder"):
    """The tiny Llama on the packed path: aigc's own decoder (what a Llama GGUF gets), or transformers' forward on
    packed linears (what another architecture's Q4_1 GGUF gets)."""
    lm = _load(tiny_llama)
    if route == "packed decoder":
        return Loaded(quantize.load_packed(tiny_llama / "model", tiny_llama / "tiny.gguf"), lm.tokenizer)
    return Loaded(quantize.pack_from_gguf(lm.model, tiny_llama / "tiny.gguf"), lm.tokenizer)


ROUTES = ["packed decoder", "transformers forward"]


def _decode(lm, prompts, seeds, **knobs):
    settings = Settings(
        knobs.get("max_new_tokens", 16),
        Sampling(knobs.get("temperature", 0.8), 40, 0.95),
        knobs.get("penalty", 1.1),
        [],
    )
    items = [(lm.tokenizer(p)["input_ids"], s) for p, s in zip(prompts, seeds, strict=True)]
    with torch.inference_mode():
        return [text for text, _ in decode(lm, items, settings, torch.device("cpu"), "tiny")]


def test_the_gguf_codes_come_back_in_transformers_row_order_exactly(tiny_llama):
    lm = _load(tiny_llama)
    blocks = quantize.q4_1_blocks(tiny_llama / "tiny.gguf", lm.model.config)
    assert len(blocks) == 14  # 7 linears x 2 layers
    for name, (codes, d, m) in blocks.items():
        rebuilt = d.repeat_interleave(32, 1) * codes.float() + m.repeat_interleave(32, 1)
        assert torch.equal(rebuilt, lm.model.get_submodule(name).weight), name
        assert codes.max() <= 15 and codes.min() >= 0


@needs_bf16
@pytest.mark.parametrize("route", ROUTES)
def test_packed_model_computes_the_same_function_in_4_bits(tiny_llama, route):
    dense, packed = _load(tiny_llama), _packed(tiny_llama, route)
    kinds = {type(m).__name__ for m in packed.model.modules()}
    assert {"Int4Linear", "Int8Linear"} <= kinds and "Linear" not in kinds
    assert ("PackedLlama" in kinds) == (route == "packed decoder")
    ids = torch.tensor([dense.tokenizer("The keeper opened the door and the sea came in")["input_ids"]])
    with torch.inference_mode():
        want, got = dense.model(input_ids=ids).logits, packed.model(input_ids=ids).logits.float()
    assert ((got - want).norm() / want.norm()).item() < 0.02  # bf16 activations and an int8 output layer
    again = _packed(tiny_llama, route)  # a second load reads the cache made by the first
    with torch.inference_mode():
        assert torch.equal(again.model(input_ids=ids).logits.float(), got)


@needs_bf16
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_packed_outputs_are_the_same_alone_or_in_a_batch_of_eight(tiny_llama, temperature, route):
    lm = _packed(tiny_llama, route)
    prompts = [
        "The sea",
        "A lighthouse keeper finds a door in the sea and",
        "Once",
        "Rain on the tower",
        "Two gannets",
        "The clock had stopped at twenty past four",
        "Mara",
        "Wind from the west",
        "The sea",
        "The sea",
    ]  # equal padding in rows 0, 8 and 9: attended in one call, apart from the rows between
    seeds = list(range(100, 110))
    batched = _decode(lm, prompts, seeds, temperature=temperature)
    alone = [_decode(lm, [p], [s], temperature=temperature)[0] for p, s in zip(prompts, seeds, strict=True)]
    assert batched == alone and len(set(batched)) > 1


@needs_bf16
def test_the_kv_cache_grows_in_chunks_without_changing_a_token(tiny_llama, monkeypatch):
    from aigc.generators.text import packed_llama

    lm = _packed(tiny_llama)
    prompts, seeds = ["The sea", "A lighthouse keeper finds a door in the sea and"], [3, 4]
    whole = _decode(lm, prompts, seeds, max_new_tokens=40, penalty=1.0)
    monkeypatch.setattr(packed_llama, "CHUNK", 8)  # the cache grows every 8 positions
    grown = _decode(lm, prompts, seeds, max_new_tokens=40, penalty=1.0)
    assert grown == whole and all(len(lm.tokenizer(text)["input_ids"]) > 30 for text in whole)


@needs_bf16
def test_compile_on_the_packed_path_says_it_compiles_nothing_and_decodes_the_same(tiny_llama):
    lm = _packed(tiny_llama)
    items = [(lm.tokenizer("Rain on the tower")["input_ids"], 9)]
    plain = Settings(8, Sampling(0.8, 40, 0.95), 1.1, [])
    with torch.inference_mode(), pytest.warns(UserWarning, match="compiles nothing on the packed CPU path"):
        compiled = decode(lm, items, dataclasses.replace(plain, compile=True), torch.device("cpu"), "tiny")
    with torch.inference_mode():
        assert compiled == decode(lm, items, plain, torch.device("cpu"), "tiny")


@needs_bf16
def test_the_layers_run_from_torchscript_with_the_same_bits_as_in_python(tiny_llama):
    from aigc.generators.text import llama_layer

    assert isinstance(llama_layer.compiled(), torch.jit.ScriptFunction)  # else the default path lost ~14% a token
    lm = _packed(tiny_llama)
    prompts = ["The sea", "A lighthouse keeper finds a door in the sea and", "Once upon a time"]
    ids = [lm.tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    batch = torch.tensor([[0] * (width - len(row)) + row for row in ids])
    pads = [width - len(row) for row in ids]

    def logits() -> list[torch.Tensor]:
        out = lm.model(input_ids=batch, aigc_pads=pads)  # the prompts, then three tokens a row, one at a time
        seen = [out.logits]
        for token in (5, 17, 256):
            out = lm.model(input_ids=torch.full((3, 1), token), past_key_values=out.past_key_values, aigc_pads=pads)
            seen.append(out.logits)
        return seen

    with torch.inference_mode():
        scripted = logits()
        lm.model._layer = llama_layer.layer  # the fallback where TorchScript is missing
        python = logits()
    assert all(torch.equal(a, b) for a, b in zip(scripted, python, strict=True)) and len(scripted) == 4


@pytest.mark.parametrize(
    "rope",
    [
        None,
        {"rope_type": "linear", "factor": 2.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
)
def test_the_rotary_table_holds_transformers_own_angles_bit_for_bit(rope):
    from transformers import LlamaConfig, PretrainedConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from aigc.generators.text.packed_llama import rotary_table

    config = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        max_position_embeddings=300,
        rope_parameters=None if rope is None else {"rope_theta": 5000.0, **rope},
    )
    cos, sin = LlamaRotaryEmbedding(config)(torch.zeros(1), torch.arange(300)[None])
    table = rotary_table(PretrainedConfig.from_dict(config.to_dict()), 300)  # the plain config load_packed reads
    assert torch.equal(table.real, cos[0, :, :8]) and torch.equal(table.imag, sin[0, :, :8])
    assert torch.equal(cos[0, :, :8], cos[0, :, 8:])  # transformers repeats each angle in both halves


@pytest.mark.pack
@needs_bf16
def test_a_fresh_process_runs_the_pack_without_importing_transformers_model_code():
    import json
    import subprocess
    import sys

    aigc.generate("text", "Hi", max_new_tokens=1, manager=DeviceManager("cpu"))  # the converted caches exist
    code = (
        "import json, sys, aigc; text = aigc.generate('text', 'Name a colour.', seed=3, max_new_tokens=6)[0].data; "
        "print(json.dumps([text, sorted(m for m in sys.modules if m.startswith('transformers.models.llama')"
        " or m in ('transformers.modeling_utils', 'transformers.activations'))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    text, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == []  # importing it costs 1.6-4.4 s of a first call
    here = aigc.generate("text", "Name a colour.", seed=3, max_new_tokens=6, manager=DeviceManager("cpu"))[0].data
    assert text == here and text


def test_a_gguf_without_q4_1_linears_keeps_the_plain_fp32_model(tiny_llama, tmp_path):
    from gguf import GGUFWriter

    lm = _load(tiny_llama)
    writer = GGUFWriter(str(tmp_path / "f32.gguf"), "llama")  # the same weights, stored as F32 (no 4-bit codes)
    for layer in range(2):
        for module, kind in quantize._GGUF_NAMES.items():
            weight = lm.model.get_submodule(f"model.layers.{layer}.{module}").weight.detach().numpy()
            writer.add_tensor(f"blk.{layer}.{kind}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert quantize.load_packed(tiny_llama / "model", tmp_path / "f32.gguf") is None
    assert quantize.pack_from_gguf(lm.model, tmp_path / "f32.gguf") is lm.model  # bf16 linears: not row-independent
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}


def test_a_dtype_asked_for_keeps_the_plain_path(monkeypatch):
    monkeypatch.delenv("AIGC_DTYPE", raising=False)
    assert DeviceManager("cpu").pack_cpu_weights == cpu_has_fast_bf16()
    assert DeviceManager("cpu", "auto").pack_cpu_weights == cpu_has_fast_bf16()
    assert not DeviceManager("cpu", "float32").pack_cpu_weights
    assert not DeviceManager("cpu", torch.float32).pack_cpu_weights
    monkeypatch.setenv("AIGC_DTYPE", "fp32")
    assert not DeviceManager("cpu").pack_cpu_weights


@pytest.mark.pack
def test_dtype_float32_for_one_call_runs_the_plain_path_and_the_reports_say_what_runs():
    """aigc.generate(dtype="float32") (as documented) turns the packed path off for that call, and stats(),
    doctor and the asset's record say what each copy runs as, not the manager's float32 alone."""
    from aigc.runtime.inventory import dtype_fact

    manager = DeviceManager("cpu")
    manager.pack_cpu_weights = True  # as on a CPU with fast bf16 (the int4 kernels also run, slower, on others)
    packed = aigc.generate("text", "Name a colour.", seed=3, max_new_tokens=8, manager=manager)[0]
    plain = aigc.generate("text", "Name a colour.", seed=3, max_new_tokens=8, manager=manager, dtype="float32")[0]
    fp32 = aigc.generate("text", "Name a colour.", seed=3, max_new_tokens=8, manager=DeviceManager("cpu", "float32"))[0]
    assert packed.info["runs"] == quantize.PACKED and plain.info["runs"] == fp32.info["runs"] == "float32"
    assert plain.data == fp32.data  # the very fp32 path, not the packed model under another name
    loaded = {model["variant"]: model["runs"] for model in manager.stats()["models"]}
    assert loaded == {"packed=True": quantize.PACKED, "": "float32"}, loaded
    assert "run packed: int4 weights" in dtype_fact(manager) and "packed" not in dtype_fact(
        DeviceManager("cpu", "fp32")
    )
    with pytest.raises(aigc.ConfigError, match="dtype='float33' is not a dtype"):
        aigc.generate("text", "Hi", dtype="float33", manager=manager)


@pytest.mark.pack
@needs_bf16
def test_the_pack_runs_packed_by_default_and_a_seed_gives_one_text_in_any_batch():
    manager = DeviceManager("cpu")
    prompts = [
        "Name a colour.",
        "Write one sentence about the sea.",
        "What is two plus two?",
        "Say hello.",
        "Name a fruit.",
        "Describe a lighthouse.",
        "Count to three.",
        "Name a bird.",
    ]
    batched = aigc.generate("text", prompts, seed=list(range(8)), max_new_tokens=12, manager=manager)
    with manager.use(manager.key("causal-lm", "pack:smollm2", variant={"packed": True}), lambda: None) as lm:
        kinds = [type(m).__name__ for m in lm.model.modules()]
    assert kinds.count("Int4Linear") == 120 and kinds.count("Int8Linear") == 1  # 30 layers x 4 fused, the output
    for asset in (batched[0], batched[5]):
        alone = aigc.generate("text", asset.prompt, seed=asset.seed, max_new_tokens=12, manager=manager)[0]
        assert alone.data == asset.data
    plain = DeviceManager("cpu", "float32")
    aigc.generate("text", "Hi", seed=1, max_new_tokens=2, manager=plain)
    with plain.use(plain.key("causal-lm", "pack:smollm2"), lambda: None) as lm:
        assert not any(type(m).__name__ == "Int4Linear" for m in lm.model.modules())


@needs_bf16
def test_the_benchmark_counts_a_quarter_of_the_bytes_per_token_once_packed(tiny_llama):
    from benchmarks.text_cpu import bytes_per_token, cpu_capabilities

    dense, packed = _load(tiny_llama), _packed(tiny_llama)
    head = 50257 * 64 * 4  # the fp32 output layer; the embedding table is not read whole each step
    layers = 2 * 36_864 * 4  # 2 layers of 7 linears in fp32; the norms add 5 x 64 floats
    assert head + layers < bytes_per_token(dense.model) < head + layers + 2_000
    assert bytes_per_token(packed.model) < bytes_per_token(dense.model) / 3.5  # int8 head, 4-bit layers
    assert cpu_capabilities()["avx512_bf16"] or cpu_capabilities()["amx_bf16"]  # what made it pack

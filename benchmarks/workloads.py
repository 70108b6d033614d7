"""Benchmark workloads. Each returns (stock_fn, aigc_fn, compare) or (None, aigc_fn, None) where no stock twin exists.

stock_fn/aigc_fn take no arguments and return an output; compare(stock_out, aigc_out) says whether aigc's
result matches the stock one (text tokens identical under greedy decoding; images within a stated tolerance).
Full-size architectures are built from their configs with random weights where real weights are absent:
the compute is the same as the real checkpoints'.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aigc.runtime.devices import DeviceManager

Workload = tuple[Callable[[], Any] | None, Callable[[], Any], Callable[[Any, Any], bool] | None]
_dirs: dict[str, str] = {}


def _gpt2_dir() -> str:
    """GPT-2 124M (the real architecture, random weights) with GPT-2's own tokenizer, saved once."""
    if "gpt2" not in _dirs:
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

        from aigc.runtime.models import gpt2_tokenizer_dir

        path = tempfile.mkdtemp(prefix="bench-gpt2-")
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(path)
        AutoTokenizer.from_pretrained(gpt2_tokenizer_dir()).save_pretrained(path)
        _dirs["gpt2"] = path
    return _dirs["gpt2"]


def gpt2(manager: DeviceManager, batch: int, new_tokens: int, compile: bool = False) -> Workload:
    """Greedy decoding of `new_tokens` for `batch` prompts: stock generate vs aigc's decoding loop.

    compile=True runs aigc's static-cache compiled step (CUDA graphs on a GPU); the warm-up call pays the
    compilation, as a long-running service would once. Stock is plain `generate`, as users call it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import aigc

    path = _gpt2_dir()
    prompts = [f"Story number {i}: once upon a time" for i in range(batch)]
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=manager.dtype).to(manager.device).eval()
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(manager.device)

    def stock():
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tokenizer.eos_token_id,
            )
        return [tokenizer.decode(row[inputs["input_ids"].shape[1] :], skip_special_tokens=True) for row in out]

    def ours():
        assets = aigc.generate(
            "text",
            prompts,
            model=path,
            seed=0,
            temperature=0.0,
            repetition_penalty=1.0,
            max_new_tokens=new_tokens,
            manager=manager,
            compile=compile,
        )
        return [a.data for a in assets]

    return stock, ours, lambda a, b: a == b


def dcgan(manager: DeviceManager, batch: int) -> Workload:
    """The face pack's DCGAN: a plain module forward + PIL conversion vs aigc.generate, same latents."""
    import aigc
    from aigc.generators.image.dcgan import build_dcgan, latent, read_state_dict
    from aigc.runtime.models import pack_path

    net = build_dcgan(read_state_dict(pack_path("gan-faces")), "pack").to(manager.device, manager.dtype)
    seeds = list(range(batch))

    def stock():
        from PIL import Image

        with torch.inference_mode():
            z = torch.stack([latent(net.nz, s) for s in seeds]).to(manager.device, manager.dtype)
            pixels = ((net(z).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]

    def ours():
        return [a.data for a in aigc.generate("image", "x", backend="gan", seed=seeds, n=batch, manager=manager)]

    def same(a, b):
        return len(a) == len(b) and all(
            np.abs(np.asarray(x, int) - np.asarray(y, int)).max() <= 1 for x, y in zip(a, b, strict=True)
        )

    return stock, ours, same


def smollm2_load(manager: DeviceManager) -> Workload:
    """Loading the embedded text model: stock transformers reading the GGUF vs aigc's cached conversion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aigc.generators.text.causal_lm import CausalLMGenerator
    from aigc.runtime.models import pack_path

    gguf = pack_path("smollm2")

    def stock():
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def ours():
        return CausalLMGenerator("pack:smollm2", DeviceManager(manager.device)).load()

    return stock, ours, None


def speech(manager: DeviceManager) -> Workload:
    """The Piper voice: seconds to speak ~7 s of audio (no stock twin: piper-tts is GPL and not used)."""
    import aigc

    text = (
        "The lighthouse keeper opened the door, and the sea poured in. Nobody in the village believed him "
        "when he told them what he had seen."
    )
    return None, lambda: aigc.generate("audio", text, seed=0, manager=manager)[0], None


def scorer(manager: DeviceManager, items: int) -> Workload:
    """Creativity scores per second for text candidates (embeddings, relevance, novelty, distinct-n)."""
    from aigc.scoring.scorer import CreativityScorer

    judge = CreativityScorer(manager, language_model=None)
    calls = iter(range(10**9))

    def ours():  # new texts every call: the embedder caches texts it has seen, which would flatter the timing
        call = next(calls)
        texts = [f"Candidate {call}-{i}: the keeper found a door floating near the lighthouse." for i in range(items)]
        return judge.score(texts, "A lighthouse keeper finds a door in the sea")

    return None, ours, None

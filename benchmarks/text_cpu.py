"""The embedded text model (SmolLM2-135M pack) on a CPU: aigc's fp32 path (what `dtype="float32"` still runs)
vs its default (the GGUF's own int4 codes, bf16 activations, on CPUs with fast bf16), a llama.cpp twin when
llama-cpp-python is installed, the quality the default keeps, and each figure against its bandwidth ceiling.

Workloads here return (stock_fn, aigc_fn, compare, details): `details(stock_out, aigc_out, stock_s, aigc_s)`
adds figures (tokens/s, bytes read per token, ceilings, agreement, perplexity) to the record.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from aigc.runtime.devices import DeviceManager

PROMPTS = [f"The keeper of lighthouse number {i} opened the door and" for i in range(8)]
HELDOUT = Path(__file__).parent / "data" / "heldout.txt"  # self-written prose, 418 SmolLM2 tokens


class Skipped(Exception):
    """A workload that cannot run here, and why (the harness prints the reason)."""


def cpu_capabilities() -> dict[str, Any]:
    """What the CPU can do, recorded with every run: the vector ISA torch picked and the bf16/AMX flags."""
    flags: list[str] = []
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
            elif line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
    return {
        "cpu": model,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        **{flag: flag in flags for flag in wanted},
    }


def memory_bandwidth_gbs(megabytes: int = 512) -> float:
    """Read bandwidth from one streaming sum over a buffer far larger than the caches (best of 3)."""
    buffer = torch.ones(megabytes * 1024**2 // 4)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best / 1e9


def bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes a decoding step reads once whatever the batch: every weight except embedding tables (a step reads
    one row of those) and tables derived at load (rotary angles: non-persistent buffers, read a row a step); a
    tied output layer counts once."""
    seen: dict[int, int] = {}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    derived = {id(getattr(m, name)) for m in model.modules() for name in m._non_persistent_buffers_set}
    head = model.get_output_embeddings()
    heads = {id(head.weight)} if isinstance(head, torch.nn.Linear) else set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if (id(tensor) in embeddings and id(tensor) not in heads) or id(tensor) in derived:
            continue
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    if isinstance(head, torch.nn.Linear) and id(head.weight) in embeddings:
        seen[head.weight.data_ptr()] = head.weight.numel() * head.weight.element_size()
    return sum(seen.values())


def _model(manager: DeviceManager) -> torch.nn.Module:
    import aigc

    aigc.generate("text", "Hi", max_new_tokens=1, manager=manager)  # loads it into the manager's cache
    with manager.use(manager.key("causal-lm", "pack:smollm2"), lambda: None) as lm:
        return lm.model


def tokens(manager: DeviceManager, batch: int, new_tokens: int) -> tuple:
    """Greedy decoding of `new_tokens` for `batch` plain prompts: the fp32 path vs the default, same pack."""
    import aigc

    plain = DeviceManager(manager.device, "float32")
    bandwidth = memory_bandwidth_gbs()
    sizes = {"fp32": bytes_per_token(_model(plain)), "default": bytes_per_token(_model(manager))}

    def run(on: DeviceManager):
        def call():
            assets = aigc.generate(
                "text",
                PROMPTS[:batch],
                model="pack:smollm2",
                seed=0,
                temperature=0.0,
                chat=False,
                repetition_penalty=1.0,
                max_new_tokens=new_tokens,
                manager=on,
            )
            return [a.data for a in assets], sum(a.info["new_tokens"] for a in assets)

        return call

    def details(stock, ours, stock_s, aigc_s):
        figures = {
            "bandwidth_gbs": round(bandwidth, 1),
            "same_rows": sum(a == b for a, b in zip(stock[0], ours[0], strict=True)),
        }
        for name, (out, seconds) in {"fp32": (stock, stock_s), "default": (ours, aigc_s)}.items():
            ceiling = batch * bandwidth * 1e9 / sizes[name]
            figures.update(
                {
                    f"{name}_tok_s": round(out[1] / seconds, 1),
                    f"{name}_mb_per_token": round(sizes[name] / 1e6, 1),
                    f"{name}_ceiling_tok_s": round(ceiling, 1),
                    f"{name}_share_of_ceiling": round(out[1] / seconds / ceiling, 2),
                }
            )
        return figures

    return run(plain), run(manager), lambda a, b: a[0] == b[0], details


def first_token(manager: DeviceManager) -> tuple:
    """Seconds to the first token of a 48-token chat prompt at batch 1 (warm): fp32 vs the default."""
    import aigc

    prompt = (
        "Write a short story about a lighthouse keeper who finds a door floating in the sea, "
        "and what happens when she opens it one stormy night."
    )
    plain = DeviceManager(manager.device, "float32")

    def run(on: DeviceManager):
        return lambda: aigc.generate("text", prompt, seed=0, temperature=0.0, max_new_tokens=1, manager=on)[0].data

    return run(plain), run(manager), lambda a, b: a == b, None


def first_call() -> tuple:
    """A fresh process: import, load from the converted cache, one token. fp32 (AIGC_DTYPE) vs the default."""
    code = "import aigc; aigc.generate('text', 'Hi', seed=0, max_new_tokens=1)"

    def run(env: dict[str, str]):
        return lambda: (
            subprocess.run(
                [sys.executable, "-c", code], env={**os.environ, **env}, check=True, capture_output=True
            ).returncode
        )

    return run({"AIGC_DTYPE": "float32"}), run({}), None, None


def quality(manager: DeviceManager) -> tuple:
    """What the default keeps: perplexity on the held-out text and top-1 agreement with fp32 at each of its
    positions (teacher-forced), and how many tokens of a 64-token greedy continuation match fp32's. Its
    seconds are not a timing (the figures are measured once)."""
    import aigc

    plain = DeviceManager(manager.device, "float32")
    fp32, default = _model(plain), _model(manager)
    with manager.use(manager.key("causal-lm", "pack:smollm2"), lambda: None) as lm:
        tokenizer = lm.tokenizer
    ids = torch.tensor([tokenizer(HELDOUT.read_text(encoding="utf-8"))["input_ids"]])

    figures: dict[str, Any] = {}

    def measure():  # measured once: the harness's repeats would only re-time the same figures
        if figures:
            return figures
        with torch.inference_mode():
            logits = {
                name: m(input_ids=ids).logits[0, :-1].float() for name, m in (("fp32", fp32), ("default", default))
            }
        ppl = {
            name: math.exp(torch.nn.functional.cross_entropy(value, ids[0, 1:]).item())
            for name, value in logits.items()
        }
        agree = (logits["fp32"].argmax(-1) == logits["default"].argmax(-1)).float().mean().item()
        texts = {
            name: [
                a.data
                for a in aigc.generate(
                    "text",
                    PROMPTS[:4],
                    seed=0,
                    temperature=0.0,
                    chat=False,
                    repetition_penalty=1.0,
                    max_new_tokens=64,
                    manager=on,
                )
            ]
            for name, on in (("fp32", plain), ("default", manager))
        }
        prefix = [
            _common_prefix(tokenizer(a)["input_ids"], tokenizer(b)["input_ids"])
            for a, b in zip(texts["fp32"], texts["default"], strict=True)
        ]
        figures.update(
            {
                "heldout_tokens": ids.shape[1],
                "ppl_fp32": round(ppl["fp32"], 3),
                "ppl_default": round(ppl["default"], 3),
                "ppl_change_pct": round(100 * (ppl["default"] / ppl["fp32"] - 1), 2),
                "top1_agreement_pct": round(100 * agree, 1),
                "greedy_same_tokens_of_64": prefix,
            }
        )
        return figures

    return None, measure, None, lambda stock, ours, *_: ours


def llama_cpp(manager: DeviceManager, batch: int, new_tokens: int) -> tuple:
    """llama.cpp on the very GGUF file (its own batched decode, greedy, the same threads) vs aigc's default, the
    same prompts: skipped without llama-cpp-python (it compiles from source for ~10-15 minutes, so it is not part
    of `make setup`)."""
    import aigc

    twin = LlamaCpp(batch)

    def ours():
        assets = aigc.generate(
            "text",
            PROMPTS[:batch],
            model="pack:smollm2",
            seed=0,
            temperature=0.0,
            chat=False,
            repetition_penalty=1.0,
            max_new_tokens=new_tokens,
            manager=manager,
        )
        return [a.data for a in assets], sum(a.info["new_tokens"] for a in assets)

    def details(stock, mine, stock_s, aigc_s):
        return {
            "llama_cpp_tok_s": round(stock[1] / stock_s, 1),
            "default_tok_s": round(mine[1] / aigc_s, 1),
            "same_rows": sum(a == b for a, b in zip(stock[0], mine[0], strict=True)),
            "llama_cpp_version": twin.version,
        }

    return lambda: twin.generate(PROMPTS[:batch], new_tokens), ours, lambda a, b: a[0] == b[0], details


BATCH_TOKENS = 512  # the most tokens one llama_decode call of the twin takes (all prompts' tokens at once)


class LlamaCpp:
    """llama.cpp through llama-cpp-python's C API: the GGUF file, `rows` sequences decoded in one batch per step,
    greedy (the argmax of its logits, as aigc's temperature=0), torch's thread count. The C API, not
    `Llama.create_completion`: that decodes one sequence and adds Python sampling on top."""

    def __init__(self, rows: int) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise Skipped(
                "llama-cpp-python is not installed (pip install llama-cpp-python; it builds from source, "
                "~10-15 min on 2 cores; a -march=native build may crash in AMX matmuls on CPUs with AMX: "
                "ggml-org/llama.cpp#20824)"
            ) from None
        from llama_cpp import _logger

        from aigc.runtime.models import pack_path

        self.api, self.version = llama_cpp, llama_cpp.__version__
        _logger.set_verbose(False)  # errors only
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        if cpu_capabilities()["amx_int8"]:
            params.use_extra_bufts = False  # the AMX buffer types crash on some CPUs (#20824)
        self.model = llama_cpp.llama_model_load_from_file(str(pack_path("smollm2")).encode(), params)
        context = llama_cpp.llama_context_default_params()
        context.n_ctx, context.n_batch, context.n_seq_max = 512 * rows, BATCH_TOKENS, rows
        context.n_threads = context.n_threads_batch = torch.get_num_threads()
        self.context = llama_cpp.llama_init_from_model(self.model, context)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, rows)

    def generate(self, prompts: list[str], new_tokens: int) -> tuple[list[str], int]:
        """Each prompt's greedy continuation (a row stops at end of text) and the tokens made in all."""
        import numpy as np

        api = self.api
        api.llama_memory_clear(api.llama_get_memory(self.context), True)
        ids = [self._tokenize(prompt) for prompt in prompts]
        self._decode(
            [
                (token, pos, row, pos == len(row_ids) - 1)
                for row, row_ids in enumerate(ids)
                for pos, token in enumerate(row_ids)
            ]
        )
        made: list[list[int]] = [[] for _ in prompts]
        outputs = list(itertools.accumulate(len(row_ids) for row_ids in ids))  # each row's last token, in the batch
        live = [(row, end - 1) for row, end in enumerate(outputs)]
        for _ in range(new_tokens):
            step = []
            for row, index in live:
                logits = np.ctypeslib.as_array(api.llama_get_logits_ith(self.context, index), shape=(self.n_vocab,))
                token = int(logits.argmax())
                if api.llama_vocab_is_eog(self.vocab, token):
                    continue
                made[row].append(token)
                step.append((token, len(ids[row]) + len(made[row]) - 1, row, True))
            if not step or len(made[step[0][2]]) == new_tokens:
                break
            live = [(row, index) for index, (_, _, row, _) in enumerate(step)]
            self._decode(step)
        return [self._detokenize(tokens) for tokens in made], sum(len(tokens) for tokens in made)

    def _decode(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        """(token, position, sequence, wants logits) each, in one llama_decode call."""
        if len(tokens) > BATCH_TOKENS:  # the C batch holds that many: more would write past its arrays
            raise ValueError(f"{len(tokens)} tokens in one llama.cpp batch; it holds {BATCH_TOKENS}.")
        batch = self.batch
        for index, (token, position, sequence, logits) in enumerate(tokens):
            batch.token[index], batch.pos[index], batch.logits[index] = token, position, logits
            batch.n_seq_id[index], batch.seq_id[index][0] = 1, sequence
        batch.n_tokens = len(tokens)
        if self.api.llama_decode(self.context, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def _tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (self.api.llama_token * (len(data) + 8))()
        count = self.api.llama_tokenize(self.vocab, data, len(data), buffer, len(buffer), False, False)
        return list(buffer[:count])

    def _detokenize(self, tokens: list[int]) -> str:
        import ctypes

        pieces = b""
        buffer = ctypes.create_string_buffer(256)
        for token in tokens:
            size = self.api.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            pieces += buffer.raw[:size]
        return pieces.decode("utf-8", errors="replace")


def _common_prefix(a: list[int], b: list[int]) -> int:
    same = 0
    for x, y in zip(a, b, strict=False):  # the prefix ends with the shorter list at the latest
        if x != y:
            break
        same += 1
    return same

"""Text generation with transformers causal LMs: the GPT-2 family, the SmolLM2 pack, any Hub causal LM.

The decoding loop is our own (a few lines over the model's forward and KV cache) because every output
needs its own randomness: that is what makes an output with seed s the same alone or in a batch. The draws
are batched (see sampling.py), so a step costs one forward pass, one sampling kernel chain and one
device->host copy of the new token ids, whatever the batch size.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from .. import models
from ..devices import require_compiler
from ..errors import ConfigError, ModelLoadError
from .base import Generator, Output, Param
from .sampling import Sampling, stream_keys

log = logging.getLogger("aigc")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass
class LoadedLM:
    model: torch.nn.Module
    tokenizer: Any
    _compiled: Callable[..., torch.Tensor] | None = None

    def compiled_step(self) -> Callable[..., torch.Tensor]:
        """The decoding step compiled once per loaded model; CUDA graphs on a GPU ("reduce-overhead")."""
        if self._compiled is None:
            mode = "reduce-overhead" if self.model.device.type == "cuda" else None
            self._compiled = torch.compile(_step, mode=mode, fullgraph=True, dynamic=False)
        return self._compiled


class CausalLMGenerator(Generator):
    kind = "text"
    family = "causal-lm"
    params = {
        "max_new_tokens": Param(200, "most new tokens per output", "int", 1, 32768),
        "temperature": Param(0.7, "sampling temperature; 0 means greedy decoding", "float", 0.0, 10.0),
        "top_p": Param(0.95, "nucleus sampling: keep the most likely tokens up to this mass", "float", 0.0, 1.0,
                       min_exclusive=True),
        "top_k": Param(50, "sample among the k most likely tokens; 0 turns it off", "int", 0),
        "repetition_penalty": Param(1.1, "divide the odds of tokens already seen; 1 turns it off", "float", 0.0, 10.0,
                                    min_exclusive=True),
        "stop": Param([], "strings that end an output (cut off, not included)", "strings"),
        "chat": Param(None, "wrap the prompt in the model's chat template (default: when it has one)", "bool"),
        "system": Param(None, "system message for chat models", "str"),
        "batch_size": Param(None, "outputs decoded together (default: all); halves itself on out-of-memory",
                            "int", 1, record=False),
        "compile": Param(False, "static KV cache + torch.compile'd decoding step (CUDA graphs on a GPU): much "
                                "faster per token, but the first call compiles (tens of seconds)", "bool",
                         record=False),
        "streamer": Param(None, "called with each new piece of text (one output only)", "callable", record=False),
    }

    def check_model(self) -> None:
        self.source = models.resolve(self.model)
        path = self.source.path
        if path is None:
            return  # a Hub id that is not cached yet, with network allowed: from_pretrained downloads it
        if path.is_file() and path.suffix != ".gguf":
            raise ModelLoadError(
                f"model={self.model!r}: a single {path.suffix or 'extensionless'} file cannot be a text model; "
                "pass a .gguf file or the directory saved with save_pretrained (config.json + weights)."
            )
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelLoadError(
                f"model={self.model!r}: {path} has no config.json, so it is not a transformers model directory; "
                "save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
            )

    def load(self) -> LoadedLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target = self.source.load_target
        if self.source.path is not None and self.source.path.suffix == ".gguf":
            gguf = self.source.path
            target = str(models.cached_conversion(gguf, "gguf", lambda out: _dequantise_gguf(gguf, out)))
        try:
            tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_target(target))
            model = AutoModelForCausalLM.from_pretrained(target, dtype=self.dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} could not be loaded from {target}: {error}") from error
        return LoadedLM(model.eval(), tokenizer)

    def _tokenizer_target(self, target: str) -> str:
        """GPT-2 checkpoints often ship without tokenizer files: use GPT-2's own from the tokenizer pack."""
        path = Path(target)
        if not path.is_dir() or any((path / name).exists() for name in _TOKENIZER_FILES):
            return target
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type != "gpt2":
            raise ModelLoadError(f"model={self.model!r}: {path} has no tokenizer files; save the tokenizer beside it.")
        return str(models.gpt2_tokenizer_dir())

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        if params["compile"]:
            require_compiler(self.manager.device)
        with self.manager.use(self.cache_key, self.load) as lm:
            ids = [self._encode(lm.tokenizer, prompt, params) for prompt in prompts]
            items = list(zip(ids, seeds))
            return self.manager.run_batched(lambda chunk: self._decode(lm, chunk, params), items, params["batch_size"])

    def _encode(self, tokenizer: Any, prompt: str, params: dict[str, Any]) -> list[int]:
        chat = params["chat"]
        has_template = getattr(tokenizer, "chat_template", None) is not None
        if chat and not has_template:
            raise ConfigError(f"chat=True, but model={self.model!r} has no chat template; use chat=False.")
        if chat is None:
            chat = has_template
        if not chat:
            return tokenizer(prompt)["input_ids"]
        messages = [{"role": "system", "content": params["system"]}] if params["system"] else []
        messages.append({"role": "user", "content": prompt})
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])

    @torch.inference_mode()
    def _decode(self, lm: LoadedLM, items: Sequence[tuple[list[int], int]], params: dict[str, Any]) -> list[Output]:
        """Sample continuations for a batch of left-padded prompts, each row with its own random stream.

        The host reads step s's tokens (stop strings, streaming, end of text) while the device already
        computes step s+1, so on a GPU the Python bookkeeping costs no device time. compile=True swaps in a
        static KV cache and a compiled decoding step (CUDA graphs on a GPU): fixed shapes, no re-allocation.
        """
        model, tokenizer, device = lm.model, lm.tokenizer, self.manager.device
        batch, max_new = len(items), params["max_new_tokens"]
        lengths = [len(ids) for ids, _ in items]
        width = max(lengths)
        limit = _context_limit(model.config)
        if limit is not None and width >= limit:
            raise ConfigError(f"the prompt is {width} tokens, but model={self.model!r} reads at most {limit}; shorten it.")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        penalty = params["repetition_penalty"]
        pick = _Pick(Sampling(params["temperature"], params["top_k"], params["top_p"]), penalty,
                     stream_keys([seed for _, seed in items], device=device))
        eos = _eos_ids(model, tokenizer)
        stops: list[str] = params["stop"]
        stream: Callable[[str], None] | None = params["streamer"]

        cache, step_fn = None, _step
        if params["compile"]:
            length = -(-(width + max_new) // 256) * 256  # rounded up, so calls of similar size share a compilation
            cache, step_fn = _static_cache(model, length, self.model), lm.compiled_step()
            mask = torch.cat([mask, mask.new_zeros((batch, length - width))], dim=1)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        out = model(input_ids=input_ids, attention_mask=mask[:, :width], position_ids=positions, use_cache=True,
                    past_key_values=cache, cache_position=torch.arange(width, device=device), **keep)
        cache = out.past_key_values
        seen = _seen_mask(input_ids, mask[:, :width], out.logits.shape[-1]) if penalty != 1.0 else None
        # the slot in the cache and the draw number live on the device and count up there: no copies per step
        slot, draw = torch.full((1,), width - 1, device=device), torch.zeros((), dtype=torch.long, device=device)
        next_ids = pick(out.logits[:, -1, :], seen, draw)

        new_tokens: list[list[int]] = [[] for _ in items]
        finish = [""] * batch
        streamed = 0
        bar = tqdm(total=max_new, desc="generating", unit="tok", leave=False, disable=True if stream else None)
        for step in range(max_new):
            on_host = _HostCopy(next_ids)
            if seen is not None:
                seen.scatter_(1, next_ids[:, None], True)  # rows already finished are never read again
            if step + 1 < max_new:  # queue the next step now; finished rows decode on, unread, at no cost
                positions = positions[:, -1:] + 1
                if limit:  # a finished row may run past the context; its tokens are never read, so hold it there
                    positions = positions.clamp(max=limit - 1)
                if params["compile"]:
                    mask[:, width + step] = 1
                else:
                    mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=1)
                slot += 1
                draw += 1
                next_ids = step_fn(model, next_ids[:, None], positions, mask, cache, slot, draw, pick, seen)
            for row, token in enumerate(on_host.tolist()):
                if finish[row]:
                    continue
                if token in eos:
                    finish[row] = "eos"
                    continue
                new_tokens[row].append(token)
                if stops and _cut_at_stop(tokenizer.decode(new_tokens[row], skip_special_tokens=True), stops)[1]:
                    finish[row] = "stop"
                elif len(new_tokens[row]) == max_new or (limit and lengths[row] + step + 1 >= limit):
                    finish[row] = "length"
            if stream:
                streamed = _stream(stream, tokenizer.decode(new_tokens[0], skip_special_tokens=True), stops, streamed, False)
            bar.update(1)
            if all(finish):
                break
        bar.close()

        outputs = []
        for row in range(batch):
            text, _ = _cut_at_stop(tokenizer.decode(new_tokens[row], skip_special_tokens=True), stops)
            outputs.append(Output(text, {"new_tokens": len(new_tokens[row]), "prompt_tokens": lengths[row],
                                         "finish_reason": finish[row] or "length"}))
        if stream:
            _stream(stream, outputs[0].data, [], streamed, True)
        return outputs


@dataclass(frozen=True)
class _Pick:
    """Repetition penalty, then one draw per row from its own key (see sampling.py)."""

    sampling: Sampling
    penalty: float
    keys: torch.Tensor

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None, step: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if seen is not None:
            logits = _penalise(logits, seen, self.penalty)
        return self.sampling.pick(logits, self.keys, step)


def _step(model: torch.nn.Module, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any,
          slot: torch.Tensor, draw: torch.Tensor, pick: _Pick, seen: torch.Tensor | None) -> torch.Tensor:
    """One decoding step: the forward pass over the newest tokens (cache `slot`), then draw number `draw`."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                cache_position=slot)
    return pick(out.logits[:, -1, :], seen, draw)


def _static_cache(model: torch.nn.Module, length: int, name: str) -> Any:
    """A fixed-size KV cache: the shapes stay the same at every step, which compilation and CUDA graphs need."""
    from transformers import StaticCache

    if not getattr(model, "_can_compile_fullgraph", False):
        raise ConfigError(f"compile=True needs a model with a static KV cache, and model={name!r} "
                          f"({type(model).__name__}) has none in transformers; use compile=False.")
    return StaticCache(config=model.config, max_cache_len=length)


class _HostCopy:
    """The token ids on the host; on a GPU copied asynchronously, so reading them waits for this copy alone."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids, self.event = ids, None
        if ids.device.type == "cuda":
            self.ids = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
            self.ids.copy_(ids, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()

    def tolist(self) -> list[int]:
        if self.event is not None:
            self.event.synchronize()
        return self.ids.tolist()


def _seen_mask(input_ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """Which tokens each row has seen, ignoring its padding (so a padded row is penalised like a lone one)."""
    seen = torch.zeros((input_ids.shape[0], vocab), dtype=torch.bool, device=input_ids.device)
    seen.scatter_(1, torch.where(mask.bool(), input_ids, 0), mask.bool())
    return seen


def _penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Repetition penalty as in CTRL (and transformers): seen tokens' logits move toward "less likely"."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _dequantise_gguf(source: Path, out: Path) -> None:
    """GGUF -> a plain transformers directory (safetensors), so later loads skip the ~25 s de-quantisation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("aigc: converting %s once (GGUF de-quantisation, ~25 s on 2 cores); later loads use the cache.",
                source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain float now; transformers refuses to save "quantized" ones
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _context_limit(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string; say whether one was found."""
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _stream(emit: Callable[[str], None], text: str, stops: list[str], sent: int, final: bool) -> int:
    """Emit the new, settled part of `text`: never a piece a stop string could still cut, nor half a character."""
    text, _ = _cut_at_stop(text, stops)
    end = len(text)
    if not final:
        while end > sent and text[end - 1] == "\ufffd":
            end -= 1
        for stop in stops:  # hold back a tail that could be the start of a stop string
            for size in range(min(len(stop) - 1, end - sent), 0, -1):
                if text[end - size:end] == stop[:size]:
                    end -= size
                    break
    if end > sent:
        emit(text[sent:end])
    return max(sent, end)

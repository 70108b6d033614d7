"""Text generation with transformers causal LMs: the GPT-2 family, the SmolLM2 pack, any Hub causal LM.

The decoding loop is our own (a few lines over the model's forward and KV cache) because every output
needs its own random generator: that is what makes an output with seed s the same alone or in a batch.
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
from ..errors import ConfigError, ModelLoadError
from .base import Generator, Output, Param

log = logging.getLogger("aigc")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass
class LoadedLM:
    model: torch.nn.Module
    tokenizer: Any


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
        """Sample continuations for a batch of left-padded prompts, each row with its own generator."""
        model, tokenizer, device = lm.model, lm.tokenizer, self.manager.device
        batch = len(items)
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
        generators = [torch.Generator(device=device).manual_seed(seed) for _, seed in items]
        sampler = _Sampler(params)
        eos = _eos_ids(model, tokenizer)
        stops: list[str] = params["stop"]
        stream: Callable[[str], None] | None = params["streamer"]

        new_tokens: list[list[int]] = [[] for _ in items]
        finish = [""] * batch
        streamed = 0
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep)
        seen = sampler.seen_mask(input_ids, mask, out.logits.shape[-1])
        bar = tqdm(total=params["max_new_tokens"], desc="generating", unit="tok", leave=False,
                   disable=True if stream else None)
        for step in range(params["max_new_tokens"]):
            next_ids = sampler.pick(out.logits[:, -1, :].float(), seen, generators)
            if sampler.penalty != 1.0:
                seen.scatter_(1, next_ids[:, None], True)  # rows already finished are never read again
            for row, token in enumerate(next_ids.tolist()):  # one device->host copy per step
                if finish[row]:
                    continue
                if token in eos:
                    finish[row] = "eos"
                    continue
                new_tokens[row].append(token)
                if stops and _cut_at_stop(tokenizer.decode(new_tokens[row], skip_special_tokens=True), stops)[1]:
                    finish[row] = "stop"
                elif len(new_tokens[row]) == params["max_new_tokens"] or (limit and lengths[row] + step + 1 >= limit):
                    finish[row] = "length"
            if stream:
                streamed = _stream(stream, tokenizer.decode(new_tokens[0], skip_special_tokens=True), stops, streamed, False)
            bar.update(1)
            if all(finish):
                break
            # finished rows keep decoding their last token: their results are never read, and a row only
            # attends to itself, so this costs nothing and saves a host->device copy per step
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=positions,
                        past_key_values=out.past_key_values, use_cache=True)
        bar.close()

        outputs = []
        for row in range(batch):
            text, _ = _cut_at_stop(tokenizer.decode(new_tokens[row], skip_special_tokens=True), stops)
            outputs.append(Output(text, {"new_tokens": len(new_tokens[row]), "prompt_tokens": lengths[row],
                                         "finish_reason": finish[row] or "length"}))
        if stream:
            _stream(stream, outputs[0].data, [], streamed, True)
        return outputs


class _Sampler:
    """Repetition penalty, temperature, top-k and top-p, then one draw per row from that row's generator."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.temperature = params["temperature"]
        self.top_k = params["top_k"]
        self.top_p = params["top_p"]
        self.penalty = params["repetition_penalty"]

    def seen_mask(self, input_ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
        """Which tokens each row has seen, ignoring its padding (so a padded row is penalised like a lone one)."""
        seen = torch.zeros((input_ids.shape[0], vocab), dtype=torch.bool, device=input_ids.device)
        seen.scatter_(1, torch.where(mask.bool(), input_ids, 0), mask.bool())
        return seen

    def pick(self, logits: torch.Tensor, seen: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        if self.penalty != 1.0:
            penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
            logits = torch.where(seen, penalised, logits)
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits / self.temperature
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = sorted_logits.softmax(dim=-1)
            drop = probs.cumsum(dim=-1) - probs > self.top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(dim=-1)
        return torch.cat([torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(generators)])


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

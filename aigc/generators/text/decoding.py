"""The text decoding loop in small named steps (litgpt-style): pad, prefill, then per token queue the next
device step while the host reads the last one.

Every output has its own random stream (sampling.py), so an output with seed s is the same alone or in a
batch. The host reads step s's tokens (stop strings, streaming, end of text) while the device already
computes step s+1, so on a GPU the Python bookkeeping costs no device time. `compile` swaps in a static KV
cache and a compiled step (CUDA graphs on a GPU): fixed shapes, no re-allocation.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ...errors import ConfigError
from .row_attention import uses_rowwise_attention
from .sampling import Sampling, stream_keys

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .packed_llama import PackedLlama

CACHE_ROUNDING = 256  # static caches are rounded up to this length, so calls of similar size share a graph
CODES = 0x110000  # one past the largest code point: (state, character) as one int, state * CODES + code point


@dataclass(frozen=True)
class Settings:
    """What one decoding call needs besides the model: the knobs, already checked."""

    max_new_tokens: int
    sampling: Sampling
    penalty: float
    stops: list[str]
    stream: Callable[[str], None] | None = None
    compile: bool = False
    on_token: Callable[[int, int], None] | None = None  # (tokens so far, most) after each step, for progress


@dataclass
class Loaded:
    """A causal LM and its tokenizer, with its compiled step made once on first use."""

    model: PreTrainedModel | PackedLlama
    tokenizer: Any
    runs: str = ""  # what it runs as, for devices.stats() and the record: "float32", "int4 (Q4_1 codes) x bf16"...
    _compiled: Callable[..., torch.Tensor] | None = None

    def compiled_step(self) -> Callable[..., torch.Tensor]:
        """The decoding step compiled once per loaded model; CUDA graphs on a GPU ("reduce-overhead")."""
        if self._compiled is None:
            mode = "reduce-overhead" if self.model.device.type == "cuda" else None
            self._compiled = torch.compile(step, mode=mode, fullgraph=True, dynamic=False)
        return self._compiled


@dataclass(frozen=True)
class Pick:
    """Repetition penalty, then one draw per row from its own key (see sampling.py)."""

    sampling: Sampling
    penalty: float
    keys: torch.Tensor

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None, draw: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if seen is not None:
            logits = penalise(logits, seen, self.penalty)
        return self.sampling.pick(logits, self.keys, draw)


@dataclass
class Batch:
    """Left-padded prompts on the device, and what advances with every step."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    lengths: list[int]
    width: int
    cache: Any = None
    seen: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the model's forward takes besides (row attention)


def decode(
    lm: Loaded, items: Sequence[tuple[list[int], int]], settings: Settings, device: torch.device, model_name: str
) -> list[tuple[str, dict[str, Any]]]:
    """Continuations of token-id prompts, one per (ids, seed): (text, info) each."""
    model, limit = lm.model, context_limit(lm.model.config)
    batch = pad(items, pad_id(lm.tokenizer), device)
    if limit is not None and batch.width >= limit:
        raise ConfigError(
            f"the prompt is {batch.width} tokens (counted by the model's tokenizer, once loaded), but "
            f"model={model_name!r} reads at most {limit}; shorten it.",
            field="prompt",
        )
    pick = Pick(settings.sampling, settings.penalty, stream_keys([seed for _, seed in items], device=device))
    step_fn = step
    if settings.compile and getattr(model, "takes_row_pads", False):
        warnings.warn(
            "aigc: compile=True compiles nothing on the packed CPU path (int4 weights, bf16; already "
            "faster than the compiled fp32 step); pass dtype='float32' to compile that.",
            stacklevel=2,
        )
        settings = dataclasses.replace(settings, compile=False)
    if uses_rowwise_attention(model) and not settings.compile:  # a static cache's unfilled slots are not padding
        batch.extra["aigc_pads"] = [batch.width - length for length in batch.lengths]
    if settings.compile:
        length = -(-(batch.width + settings.max_new_tokens) // CACHE_ROUNDING) * CACHE_ROUNDING
        batch.cache, step_fn = static_cache(model, length, model_name), lm.compiled_step()
        batch.mask = torch.cat([batch.mask, batch.mask.new_zeros((len(items), length - batch.width))], dim=1)
    logits = prefill(model, batch)
    if settings.penalty != 1.0:
        batch.seen = seen_mask(batch.ids, batch.mask[:, : batch.width], logits.shape[-1])
    # text is decoded as it comes only where it is read: rows with stop strings, and the streamed row
    stops = Stops(settings.stops)  # built once per call, shared by every row
    rows = [
        RowText(lm.tokenizer, stops, live=bool(stops.strings) or (row == 0 and settings.stream is not None))
        for row in range(len(items))
    ]
    # the slot in the cache and the draw number live on the device and count up there: no copies per step
    slot = torch.full((1,), batch.width - 1, device=device)
    draw = torch.zeros((), dtype=torch.long, device=device)
    next_ids = pick(logits, batch.seen, draw)
    reader = Reader(rows, eos_ids(model, lm.tokenizer), settings, limit, batch.lengths)
    for index in range(settings.max_new_tokens):
        on_host = HostCopy(next_ids)
        if batch.seen is not None:
            batch.seen.scatter_(1, next_ids[:, None], True)  # rows already finished are never read again
        if index + 1 < settings.max_new_tokens:  # queue the next step now; finished rows decode on, unread
            advance(batch, index, limit, settings.compile)
            slot += 1
            draw += 1
            next_ids = step_fn(
                model,
                next_ids[:, None],
                batch.positions,
                batch.mask,
                batch.cache,
                slot,
                draw,
                pick,
                batch.seen,
                batch.extra,
            )
        if settings.on_token:
            settings.on_token(index + 1, settings.max_new_tokens)
        if reader.read(on_host.tolist(), index):
            break
    return reader.results()


def pad(items: Sequence[tuple[list[int], int]], pad: int, device: torch.device) -> Batch:
    """The prompts left-padded into one tensor, with their attention mask and position ids."""
    lengths = [len(ids) for ids, _ in items]
    width = max(lengths)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (tokens, _) in enumerate(items):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        mask[row, width - len(tokens) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return Batch(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), lengths, width)


def prefill(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The prompts through the model once, filling the KV cache; the last position's logits."""
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(
        input_ids=batch.ids,
        attention_mask=batch.mask[:, : batch.width],
        position_ids=batch.positions,
        use_cache=True,
        past_key_values=batch.cache,
        cache_position=torch.arange(batch.width, device=batch.ids.device),
        **keep,
        **batch.extra,
    )
    batch.cache = out.past_key_values
    return out.logits[:, -1, :]


def advance(batch: Batch, index: int, limit: int | None, static: bool) -> None:
    """Positions and mask one token further. A finished row may run past the context: its tokens are never
    read, so its position is held at the last one."""
    batch.positions = batch.positions[:, -1:] + 1
    if limit:
        batch.positions = batch.positions.clamp(max=limit - 1)
    if static:
        batch.mask[:, batch.width + index] = 1
    else:
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((batch.mask.shape[0], 1))], dim=1)


def step(
    model: torch.nn.Module,
    ids: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
    cache: Any,
    slot: torch.Tensor,
    draw: torch.Tensor,
    pick: Pick,
    seen: torch.Tensor | None,
    extra: dict[str, Any] | None = None,
) -> torch.Tensor:
    """One decoding step: the forward pass over the newest tokens (cache `slot`), then draw number `draw`."""
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        cache_position=slot,
        **(extra or {}),
    )
    return pick(out.logits[:, -1, :], seen, draw)


@dataclass
class Reader:
    """The host's side of the loop: each row's tokens and text, why it ended, and the stream."""

    rows: list[RowText]
    eos: set[int]
    settings: Settings
    limit: int | None
    lengths: list[int]
    ended: list[str] = field(default_factory=list)  # why each row ended ("" while it goes on)
    streamed: int = 0

    def __post_init__(self) -> None:
        self.ended = [""] * len(self.rows)

    def read(self, tokens: list[int], index: int) -> bool:
        """Take one step's tokens; say whether every row has ended."""
        for row, token in enumerate(tokens):
            if self.ended[row]:
                continue
            if token in self.eos:
                self.ended[row] = "eos"
                continue
            text = self.rows[row]
            if text.add(token):
                self.ended[row] = "stop"
            elif len(text.ids) == self.settings.max_new_tokens or (
                self.limit and self.lengths[row] + index + 1 >= self.limit
            ):
                self.ended[row] = "length"
        if self.settings.stream:
            self.streamed = stream_piece(self.settings.stream, self.rows[0].settled(), self.streamed)
        return all(self.ended)

    def results(self) -> list[tuple[str, dict[str, Any]]]:
        """Each row's text, decoded once in full and cut at the first stop string, with its counts."""
        results = []
        for row, text in enumerate(self.rows):
            results.append(
                (
                    text.final(),
                    {
                        "new_tokens": len(text.ids),
                        "prompt_tokens": self.lengths[row],
                        "finish_reason": self.ended[row] or "length",
                    },
                )
            )
        if self.settings.stream:
            stream_piece(self.settings.stream, results[0][0], self.streamed, final=True)
        return results


class Stops:
    """The stop strings as one Aho-Corasick automaton, built once per call: text is read a character at a time at
    a cost that does not grow with the number of stops (one move down the trie, and over a whole text at most as
    many moves back as were made down). A state is the longest tail of the text read so far that begins a stop.
    States are plain ints and the trie one dict of ints, so building it makes no object per state."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.strings = list(stops)
        self.next: dict[int, int] = {}  # the trie: state * CODES + code point -> the next state
        parent, code, self.depth = [0], [0], [0]  # per state: its parent, its last character, its length
        whole: set[int] = set()  # states where a stop string ends
        for stop in self.strings:
            state = 0
            for char in stop:
                key = state * CODES + ord(char)
                if key not in self.next:
                    self.next[key] = len(self.depth)
                    parent.append(state)
                    code.append(ord(char))
                    self.depth.append(self.depth[state] + 1)
                state = self.next[key]
            whole.add(state)
        self.longest = max(self.depth)
        self.back = [0] * len(self.depth)  # the longest shorter tail that is a state too (failure link)
        self.ends = [0] * len(self.depth)  # the length of the longest stop the text read ends with (0: none)
        for state in sorted(range(1, len(self.depth)), key=self.depth.__getitem__):  # shallower states first
            if parent[state]:
                self.back[state] = self._move(self.back[parent[state]], code[state])
            self.ends[state] = self.depth[state] if state in whole else self.ends[self.back[state]]

    def step(self, state: int, char: str) -> int:
        """The state after reading `char` in `state`."""
        return self._move(state, ord(char))

    def _move(self, state: int, code: int) -> int:
        while state and state * CODES + code not in self.next:
            state = self.back[state]
        return self.next.get(state * CODES + code, 0)

    def cut(self, text: str) -> int | None:
        """Where the first stop string in `text` begins (the earliest start of any), or None."""
        best, state = None, 0
        for end, char in enumerate(text):
            if best is not None and end - self.longest + 1 >= best:
                break  # a stop ending here or later starts at the best found or after it
            state = self.step(state, char)
            if self.ends[state] and (best is None or end - self.ends[state] + 1 < best):
                best = end - self.ends[state] + 1
        return best


class RowText:
    """One row's new text, decoded as its tokens arrive at a constant cost per token (not a decode of the whole
    row every step), with stop strings looked for only in the newest piece, through the automaton (Stops)."""

    def __init__(self, tokenizer: Any, stops: Stops, live: bool = True) -> None:
        self.tokenizer, self.stops, self.live = tokenizer, stops, live
        self.ids: list[int] = []
        self.text = ""
        self.state = 0  # the automaton's state after `text`
        self.stop_at: int | None = None  # where the first stop string begins, once one has come
        self._prefix = self._read = 0  # ids[_prefix:_read] is the piece decoded last, kept for context

    def add(self, token: int) -> bool:
        """Append a token; say whether a stop string now occurs in the text."""
        self.ids.append(token)
        if not self.live:
            return False
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix, len(self.ids))
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False  # half a character so far: the next token completes it
        piece = after[len(before) :]
        self.text += piece
        self._prefix, self._read = self._read, len(self.ids)
        for char in piece:
            self.state = self.stops.step(self.state, char)
            if self.stops.ends[self.state]:
                self.stop_at = self.stops.cut(self.text)
                return True
        return False

    def settled(self) -> str:
        """The text no stop string can still cut: up to the first stop, or all but a tail that could begin one."""
        if self.stop_at is not None:
            return self.text[: self.stop_at]
        return self.text[: len(self.text) - self.stops.depth[self.state]]

    def final(self) -> str:
        return cut_at_stop(self._decode(0, len(self.ids)), self.stops)[0]

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True) if end > start else ""


def cut_at_stop(text: str, stops: Stops) -> tuple[str, bool]:
    """Cut `text` at the first stop string; say whether one was found."""
    cut = stops.cut(text)
    return (text, False) if cut is None else (text[:cut], True)


def stream_piece(emit: Callable[[str], None], settled: str, sent: int, final: bool = False) -> int:
    """Emit what `settled` (text no stop string can still cut) holds past the `sent` characters emitted so far;
    never half a character, until the final text."""
    end = len(settled)
    while not final and end > sent and settled[end - 1] == "\ufffd":
        end -= 1
    if end > sent:
        emit(settled[sent:end])
    return max(sent, end)


class HostCopy:
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


def static_cache(model: PreTrainedModel | PackedLlama, length: int, name: str) -> Any:
    """A fixed-size KV cache: the shapes stay the same at every step, which compilation and CUDA graphs need."""
    from transformers import StaticCache

    if not getattr(model, "_can_compile_fullgraph", False):
        raise ConfigError(
            f"compile=True needs a model with a static KV cache, and model={name!r} "
            f"({type(model).__name__}) has none in transformers (found once it loaded); use compile=False.",
            field="compile",
        )
    return StaticCache(config=model.config, max_cache_len=length)


def seen_mask(ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """Which tokens each row has seen, ignoring its padding (so a padded row is penalised like a lone one)."""
    seen = torch.zeros((ids.shape[0], vocab), dtype=torch.bool, device=ids.device)
    seen.scatter_(1, torch.where(mask.bool(), ids, 0), mask.bool())
    return seen


def penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Repetition penalty as in CTRL (and transformers): seen tokens' logits move toward "less likely"."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def context_limit(config: Any) -> int | None:
    """The longest sequence the model reads, from its config (any of the names transformers configs use)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None) if not isinstance(config, dict) else config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return None


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids

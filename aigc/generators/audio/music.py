"""Text-to-music with transformers MusicGen (facebook/musicgen-small and its family).

The sampling loop is our own (a few lines over the model's forward, its KV cache and MusicGen's codebook
delay pattern) rather than `model.generate(do_sample=True)`, because generate draws every row of a batch
from the one global RNG: an output would then depend on its batch-mates, and two threads would share
(and disturb) the same random stream. Here each output's codes come from its own seeded noise (one stream
per codebook, see sampling.py), drawn for the whole batch at once, so an output with seed s is the same
alone or in a batch, with no process-wide lock. The cost is a second decoding loop to keep in step with
transformers; `test_music.py` checks it against stock `generate`.

Each output's codes are decoded to audio by EnCodec one at a time, so batching never changes a waveform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError, ModelLoadError
from ...media.audio import tidy
from ...runtime import models
from ..base import Generator, Nudge, Output, Param

MAX_SECONDS = 30.0


class MusicGenerator(Generator):
    """MusicGen from a Hub id or a directory saved with save_pretrained (model + tokenizer)."""

    kind = "audio"
    family = "musicgen"
    params = {
        "duration": Param(8.0, "length of the music in seconds", "float", 0.0, MAX_SECONDS, min_exclusive=True),
        "guidance": Param(
            3.0,
            "classifier-free guidance scale; <= 1 turns guidance off (faster, less on-prompt)",
            "float",
            0.0,
            20.0,
            nudge=Nudge(novelty=-1.0, relevance=1.5, quality=0.0, low=1.0, high=15.0),
        ),
        "temperature": Param(
            1.0,
            "sampling temperature",
            "float",
            0.0,
            5.0,
            min_exclusive=True,
            nudge=Nudge(novelty=1.25, relevance=0.8, quality=0.9, low=0.05, high=2.0, by="mul"),
        ),
        "top_k": Param(250, "sample among the k most likely codes; 0 turns it off", "int", 0),
        "batch_size": Param(
            None, "outputs decoded together (default: all); halves itself on out-of-memory", "int", 1, record=False
        ),
    }

    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        path = source.path
        if path is not None and path.is_file():
            return (
                "a single file cannot be a MusicGen model; pass a Hub id like 'facebook/musicgen-small' or the "
                "directory saved with model.save_pretrained(dir) and processor.save_pretrained(dir)."
            )
        if path is not None and not (path / "config.json").exists():
            return (
                f"{path} has no config.json, so it is not a transformers model directory; save one with "
                "model.save_pretrained(dir) and processor.save_pretrained(dir)."
            )
        if models.pickled_weights(path):
            return models.pickled_weights(path)
        config = source.json("config.json")
        if path is not None and config is None:
            return f"{path / 'config.json'} is not readable JSON."
        model_type = (config or {}).get("model_type", "musicgen")
        if model_type != "musicgen":
            return (
                f"{path or source.ref} holds a {model_type!r} model, but the music backend needs a 'musicgen' one "
                "(MusicgenForConditionalGeneration), such as 'facebook/musicgen-small'."
            )
        return None

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        config = self.source.json("config.json")
        if config is not None:
            _plan(params["duration"], config.get("decoder", {}), config.get("audio_encoder", {}), self.model)

    def load(self) -> Any:
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration

        target = self.source.load_target
        try:
            tokenizer = AutoTokenizer.from_pretrained(target)
            model = MusicgenForConditionalGeneration.from_pretrained(target, dtype=self.dtype, use_safetensors=True)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} could not be loaded from {target}: {error}") from error
        return _Loaded(model.eval(), tokenizer)

    def forward(self, loaded: Any, items: Sequence[tuple[str, int]], params: dict[str, Any]) -> list[Output]:
        """Sample audio codes for a chunk of prompts, each output from its own random stream, then decode them."""
        import torch

        model = loaded.model
        frames, length = _plan(
            params["duration"], model.config.decoder.to_dict(), model.config.audio_encoder.to_dict(), self.model
        )
        with torch.inference_mode():
            encoded, mask = _encode_text(
                loaded, [prompt for prompt, _ in items], params["guidance"] > 1, self.manager.device
            )
            ids = _sample_codes(
                model,
                encoded,
                mask,
                [seed for _, seed in items],
                length,
                params,
                self.manager.device,
                (lambda step, total: self.report("decode", step, total)) if self.reporting else None,
            )
            return [_to_audio(model, ids[row], frames) for row in range(len(items))]


class _Loaded:
    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer


def _frame_rate(codec: dict[str, Any]) -> int:
    """EnCodec frames per second, as EncodecConfig.frame_rate computes it (defaults: EnCodec 24 kHz)."""
    return math.ceil(codec.get("sampling_rate", 24000) / math.prod(codec.get("upsampling_ratios", [8, 5, 4, 2])))


def _plan(duration: float, decoder: dict[str, Any], codec: dict[str, Any], name: str) -> tuple[int, int]:
    """Frames of audio codes for `duration`, and the decoder steps they take; an error past the model's limit.

    The start token comes first, then each codebook runs one step behind the previous (the delay pattern).
    """
    books = decoder.get("num_codebooks", 4)
    channel_books = books // 2 if decoder.get("audio_channels", 1) == 2 else books
    rate = _frame_rate(codec)
    frames = max(1, round(duration * rate))
    length, limit = frames + channel_books, decoder.get("max_position_embeddings", 2048)
    if length > limit:
        most = (limit - channel_books) / rate
        raise ConfigError(
            f"duration={duration} needs {length} decoder steps, but model={name!r} takes at most "
            f"{limit}; use duration <= {most:.1f}.",
            field="duration",
        )
    return frames, length


def _encode_text(loaded: Any, prompts: list[str], guided: bool, device: Any) -> tuple[tuple[Any], Any]:
    """The T5 encoding of the prompts; with guidance, an unconditional half of null text after them (zeros,
    fully masked), as MusicGen was trained with."""
    import torch

    text = loaded.tokenizer(prompts, padding=True, return_tensors="pt").to(device)
    mask = text["attention_mask"]
    hidden = loaded.model.text_encoder(input_ids=text["input_ids"], attention_mask=mask).last_hidden_state
    if guided:
        hidden = torch.cat([hidden, torch.zeros_like(hidden)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
    return (hidden,), mask


def _sample_codes(
    model: Any,
    encoded: tuple[Any],
    mask: Any,
    seeds: list[int],
    length: int,
    params: dict[str, Any],
    device: Any,
    on_step: Any = None,
) -> Any:
    """The decoder's codes under the delay pattern, one random stream per (output, codebook): [batch, books, steps]."""
    import torch

    from ..text.sampling import Sampling, stream_keys

    decoder, batch = model.decoder, len(seeds)
    books, guided = decoder.num_codebooks, params["guidance"] > 1
    start_id = _first_set(model.generation_config.decoder_start_token_id, decoder.config.bos_token_id)
    start = torch.full((batch * books, 1), start_id, dtype=torch.long, device=device)
    ids, pattern = decoder.build_delay_pattern_mask(start, pad_token_id=start_id, max_length=length)
    keys = stream_keys(seeds, streams=books, device=device)
    sampling = Sampling(params["temperature"], params["top_k"])
    cache = None
    for step in range(ids.shape[-1], length):
        ids = decoder.apply_delay_pattern_mask(ids, pattern)
        step_ids = ids if cache is None else ids[:, -1:]
        out = model(
            encoder_outputs=encoded,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            decoder_input_ids=step_ids.repeat(2, 1) if guided else step_ids,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        if guided:
            cond, uncond = logits.split(batch * books)
            logits = uncond + (cond - uncond) * params["guidance"]
        ids = torch.cat([ids, sampling.pick(logits, keys, step)[:, None]], dim=-1)
        if on_step is not None:
            on_step(step + 1, length)
    return decoder.apply_delay_pattern_mask(ids, pattern).reshape(batch, books, -1)


def _to_audio(model: Any, ids: Any, frames: int) -> Output:
    """One output's codes undelayed and decoded by EnCodec alone (so batching never changes a waveform)."""
    import torch

    books, stereo = model.decoder.num_codebooks, model.decoder.config.audio_channels == 2
    delays = [book // 2 if stereo else book for book in range(books)]  # stereo interleaves left/right
    codes = torch.stack([ids[book, 1 + delay : 1 + delay + frames] for book, delay in enumerate(delays)])
    waves = [
        model.audio_encoder.decode(part[None, None], audio_scales=[None]).audio_values[0]
        for part in ([codes[0::2], codes[1::2]] if stereo else [codes])
    ]
    audio = tidy(torch.cat(waves).float().cpu().numpy(), model.config.audio_encoder.sampling_rate)
    return Output(audio, {"sample_rate": audio.sample_rate, "seconds": round(audio.duration, 3), "tokens": frames})


def _first_set(*values: Any) -> int:
    for value in values:
        if isinstance(value, int):
            return value
    raise ModelLoadError("the MusicGen config names no decoder start token (decoder_start_token_id/bos_token_id).")

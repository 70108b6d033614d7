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

import json
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .. import models
from ..audio import tidy
from ..errors import ConfigError, ModelLoadError
from .base import Generator, Output, Param
from .sampling import Sampling, stream_keys

MAX_SECONDS = 30.0


@dataclass
class LoadedMusicgen:
    model: torch.nn.Module
    tokenizer: Any


class MusicGenerator(Generator):
    """MusicGen from a Hub id or a directory saved with save_pretrained (model + tokenizer)."""

    kind = "audio"
    family = "musicgen"
    params = {
        "duration": Param(8.0, "length of the music in seconds", "float", 0.0, MAX_SECONDS, min_exclusive=True),
        "guidance": Param(3.0, "classifier-free guidance scale; <= 1 turns guidance off (faster, less on-prompt)",
                          "float", 0.0, 20.0),
        "temperature": Param(1.0, "sampling temperature", "float", 0.0, 5.0, min_exclusive=True),
        "top_k": Param(250, "sample among the k most likely codes; 0 turns it off", "int", 0),
        "batch_size": Param(None, "outputs decoded together (default: all); halves itself on out-of-memory",
                            "int", 1, record=False),
    }

    def check_model(self) -> None:
        self.source = models.resolve(self.model)
        path = self.source.path
        if path is None:
            return  # a Hub id that is not cached yet, with network allowed: from_pretrained downloads it
        if path.is_file():
            raise ModelLoadError(
                f"model={self.model!r}: a single file cannot be a MusicGen model; pass a Hub id like "
                "'facebook/musicgen-small' or the directory saved with model.save_pretrained(dir) and "
                "processor.save_pretrained(dir)."
            )
        config = path / "config.json"
        if not config.exists():
            raise ModelLoadError(
                f"model={self.model!r}: {path} has no config.json, so it is not a transformers model directory; "
                "save one with model.save_pretrained(dir) and processor.save_pretrained(dir)."
            )
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r}: {config} is not readable JSON ({error}).") from error
        if model_type != "musicgen":
            raise ModelLoadError(
                f"model={self.model!r}: {path} holds a {model_type!r} model, but the music backend needs a "
                "'musicgen' one (MusicgenForConditionalGeneration), such as 'facebook/musicgen-small'."
            )

    def load(self) -> LoadedMusicgen:
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration

        target = self.source.load_target
        try:
            tokenizer = AutoTokenizer.from_pretrained(target)
            model = MusicgenForConditionalGeneration.from_pretrained(target, dtype=self.dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} could not be loaded from {target}: {error}") from error
        return LoadedMusicgen(model.eval(), tokenizer)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        with self.manager.use(self.cache_key, self.load) as loaded:
            items = list(zip(prompts, seeds))
            return self.manager.run_batched(lambda chunk: self._sample(loaded, chunk, params), items,
                                            params["batch_size"])

    @torch.inference_mode()
    def _sample(self, loaded: LoadedMusicgen, items: Sequence[tuple[str, int]], params: dict[str, Any]) -> list[Output]:
        """Sample audio codes for a batch of prompts, each output from its own generator, then decode them."""
        model, device = loaded.model, self.manager.device
        codec, decoder = model.config.audio_encoder, model.decoder
        batch, books = len(items), decoder.num_codebooks
        stereo = decoder.config.audio_channels == 2
        channel_books = books // 2 if stereo else books
        frames = max(1, round(params["duration"] * codec.frame_rate))
        length = frames + channel_books  # the start token, then each codebook runs one step behind the previous
        limit = decoder.config.max_position_embeddings
        if length > limit:
            most = (limit - channel_books) / codec.frame_rate
            raise ConfigError(f"duration={params['duration']} needs {length} decoder steps, but model={self.model!r} "
                              f"takes at most {limit}; use duration <= {most:.1f}.")
        start_id = _first_set(model.generation_config.decoder_start_token_id, decoder.config.bos_token_id)
        guided = params["guidance"] > 1

        text = loaded.tokenizer([prompt for prompt, _ in items], padding=True, return_tensors="pt").to(device)
        mask = text["attention_mask"]
        hidden = model.text_encoder(input_ids=text["input_ids"], attention_mask=mask).last_hidden_state
        if guided:  # the unconditional half: a null text (zeros, fully masked), as MusicGen was trained with
            hidden = torch.cat([hidden, torch.zeros_like(hidden)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        encoded = (hidden,)

        start = torch.full((batch * books, 1), start_id, dtype=torch.long, device=device)
        ids, pattern = decoder.build_delay_pattern_mask(start, pad_token_id=start_id, max_length=length)
        keys = stream_keys([seed for _, seed in items], streams=books, device=device)
        sampling = Sampling(params["temperature"], params["top_k"])
        cache = None
        for step in range(ids.shape[-1], length):
            ids = decoder.apply_delay_pattern_mask(ids, pattern)
            step_ids = ids if cache is None else ids[:, -1:]
            out = model(encoder_outputs=encoded, attention_mask=mask, past_key_values=cache, use_cache=True,
                        decoder_input_ids=step_ids.repeat(2, 1) if guided else step_ids)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            if guided:
                cond, uncond = logits.split(batch * books)
                logits = uncond + (cond - uncond) * params["guidance"]
            ids = torch.cat([ids, sampling.pick(logits, keys, step)[:, None]], dim=-1)
        ids = decoder.apply_delay_pattern_mask(ids, pattern).reshape(batch, books, -1)

        outputs = []
        for row in range(batch):
            delays = [book // 2 if stereo else book for book in range(books)]  # stereo interleaves left/right
            codes = torch.stack([ids[row, book, 1 + delay:1 + delay + frames] for book, delay in enumerate(delays)])
            waves = [model.audio_encoder.decode(part[None, None], audio_scales=[None]).audio_values[0]
                     for part in ([codes[0::2], codes[1::2]] if stereo else [codes])]
            audio = tidy(torch.cat(waves).float().cpu().numpy(), codec.sampling_rate)
            outputs.append(Output(audio, {"sample_rate": audio.sample_rate, "seconds": round(audio.duration, 3),
                                          "tokens": frames}))
        return outputs


def _first_set(*values: Any) -> int:
    for value in values:
        if isinstance(value, int):
            return value
    raise ModelLoadError("the MusicGen config names no decoder start token (decoder_start_token_id/bos_token_id).")

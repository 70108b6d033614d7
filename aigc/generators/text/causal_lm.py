"""Text generation with transformers causal LMs: the GPT-2 family, the SmolLM2 pack, any Hub causal LM.

The decoding loop is our own (decoding.py), because every output needs its own randomness: that is what
makes an output with seed s the same alone or in a batch. This file is the backend around it: which models
it runs, its knobs, loading, and the chat template.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ModelLoadError
from ...runtime import models
from ..base import Generator, Nudge, Output, Param

log = logging.getLogger("aigc")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_CAUSAL_ARCHITECTURES = ("ForCausalLM", "LMHeadModel")


class CausalLMGenerator(Generator):
    kind = "text"
    family = "causal-lm"
    per_output = ("messages",)
    params = {
        "max_new_tokens": Param(200, "most new tokens per output", "int", 1, 32768),
        "temperature": Param(
            0.7,
            "sampling temperature; 0 means greedy decoding",
            "float",
            0.0,
            10.0,
            nudge=Nudge(novelty=1.25, relevance=0.8, quality=0.9, low=0.05, high=2.0, by="mul"),
        ),
        "top_p": Param(
            0.95, "nucleus sampling: keep the most likely tokens up to this mass", "float", 0.0, 1.0, min_exclusive=True
        ),
        "top_k": Param(50, "sample among the k most likely tokens; 0 turns it off", "int", 0),
        "repetition_penalty": Param(
            1.1, "divide the odds of tokens already seen; 1 turns it off", "float", 0.0, 10.0, min_exclusive=True
        ),
        "stop": Param(
            [], "strings that end an output (cut off, not included)", "strings", bounds=("stop_strings", "stop_chars")
        ),
        "chat": Param(None, "wrap the prompt in the model's chat template (default: when it has one)", "bool"),
        "system": Param(None, "system message for chat models", "str"),
        "messages": Param(
            None,
            "the chat so far (system/user/assistant turns, the user's last), answered in place "
            "of the prompt alone: what an OpenAI-style chat sends; or one chat per output. "
            "Each output records its chat in info",
            "messages",
            record=False,
        ),
        "batch_size": Param(
            None, "outputs decoded together (default: all); halves itself on out-of-memory", "int", 1, record=False
        ),
        "compile": Param(
            False,
            "static KV cache + torch.compile'd decoding step (CUDA graphs on a GPU): much "
            "faster per token, but the first call compiles (tens of seconds)",
            "bool",
            record=False,
        ),
        "streamer": Param(None, "called with each new piece of text (one output only)", "callable", record=False),
        "adapter": Param(
            None,
            "a LoRA adapter directory (what `aigc tune text` makes) applied to the model; "
            "model=ADAPTER_DIR alone loads it on the base model it names",
            "path",
        ),
    }

    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        adapter = models.adapter_of(source)
        if adapter is not None:
            return _base_fits(cls, adapter)
        path = source.path
        if path is not None and path.is_file():
            if source.suffix == ".gguf":
                with open(path, "rb") as handle:
                    magic = handle.read(4)
                return None if magic == b"GGUF" else f"{path.name} is not a GGUF file (it does not start with 'GGUF')."
            return (
                f"a single {path.suffix or 'extensionless'} file cannot be a text model; pass a .gguf file or the "
                "directory saved with save_pretrained (config.json + weights)."
            )
        if path is not None and not (path / "config.json").exists():
            return (
                f"{path} has no config.json, so it is not a transformers model directory; save one with "
                "model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
            )
        if models.pickled_weights(path):
            return models.pickled_weights(path)
        config = source.json("config.json")
        if path is not None and config is None:
            return f"{path / 'config.json'} is not a JSON object, so it is not a transformers config."
        architectures = (config or {}).get("architectures") or []
        if architectures and not any(a.endswith(_CAUSAL_ARCHITECTURES) for a in architectures):
            return (
                f"it holds a {', '.join(architectures)} ({(config or {}).get('model_type')!r}), not a causal "
                "language model (a *ForCausalLM or *LMHeadModel); pass one, e.g. 'openai-community/gpt2'."
            )
        return None  # a causal LM, or a Hub id not cached yet that from_pretrained will download

    def check_model(self) -> None:
        """An adapter given as model= runs on its base: `source` is the base's, `adapter` the directory."""
        super().check_model()
        self.adapter = models.adapter_of(self.source)
        if self.adapter is not None:
            self.source = models.resolve(self.adapter.base)

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        if params["adapter"] is not None:
            self._check_adapter(params["adapter"])
        if params["streamer"] is not None and len(prompts) != 1:
            raise ConfigError(
                f"streamer= streams one output, but this request makes {len(prompts)}; use n=1 and one prompt.",
                field="streamer",
            )
        template = self._has_chat_template()
        if params["chat"] and template is False:
            raise ConfigError(
                f"chat=True, but model={self.model!r} has no chat template; use chat=False.", field="chat"
            )
        if params["messages"] and isinstance(params["messages"][0], list) and len(params["messages"]) != len(prompts):
            raise ConfigError(
                f"messages holds {len(params['messages'])} chats for {len(prompts)} outputs; give one "
                "chat for all, or one per output.",
                field="messages",
            )
        if (
            params["system"] is not None
            and not params["messages"]
            and (params["chat"] is False or (params["chat"] is None and template is False))
        ):
            raise ConfigError(
                f"system= is a chat model's system message, and model={self.model!r} is not used as one "
                "here (no chat template, or chat=False); drop system= or put it in the prompt.",
                field="system",
            )
        if params["compile"]:
            from ...runtime.devices import require_compiler

            require_compiler(self.manager.device)
            if self._compiles() is False:
                raise ConfigError(
                    f"compile=True needs a model with a static KV cache, and model={self.model!r} has "
                    "none in transformers; use compile=False.",
                    field="compile",
                )

    def variant(self, params: dict[str, Any]) -> dict[str, Any]:
        """An adapter= is another cached model (the base plus that adapter, merged); so is a GGUF run packed."""
        if params["adapter"]:
            return {"adapter": str(self._check_adapter(params["adapter"]).path)}
        return {"packed": True} if self._packs() else {}

    def _packs(self, adapter: str | None = None) -> bool:
        """Whether this load runs the GGUF file's own 4-bit codes (quantize.py) rather than de-quantised weights."""
        merged = adapter or (self.adapter.path if self.adapter is not None else None)
        return self.source.suffix == ".gguf" and self.packs_cpu_weights and merged is None

    def load(self, adapter: str | None = None, packed: bool = False) -> Any:
        from transformers import AutoTokenizer

        from . import quantize
        from .decoding import Loaded

        target = self._weights_dir()
        directory = adapter or (self.adapter.path if self.adapter is not None else None)
        packs = packed and self._packs(adapter)
        try:
            # a Llama GGUF: the file's own 4-bit codes on aigc's packed decoder (quantize.py, packed_llama.py)
            packed_lm = quantize.load_packed(target, self.source.file) if packs else None
            # the plain config a packed model carries spares the tokenizer the Llama classes (~1.6 s to import)
            tokenizer = AutoTokenizer.from_pretrained(
                self._tokenizer_target(target), config=getattr(packed_lm, "config", None)
            )
            if packed_lm is None:
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(target, dtype=self.dtype, use_safetensors=True)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model={self.model!r} could not be loaded from {target}: {error}") from error
        if packed_lm is not None:  # packs: no adapter to merge
            return Loaded(packed_lm.eval(), tokenizer, runs=quantize.describe(packed_lm, self.dtype))
        if directory is not None:
            model = _merged(model, Path(directory))
        elif packs:
            model = quantize.pack_from_gguf(model, self.source.file)  # another architecture's Q4_1 linears
        return Loaded(model.eval(), tokenizer, runs=quantize.describe(model, self.dtype))

    def _check_adapter(self, reference: str) -> models.Adapter:
        """adapter=DIR: a LoRA directory trained on this very model (before anything loads)."""
        try:
            adapter = models.adapter_of(models.resolve(reference))
        except ModelLoadError as error:
            raise ConfigError(f"adapter={reference!r}: {error}", field="adapter") from None
        if adapter is None:
            raise ConfigError(
                f"adapter={reference!r} is not an adapter directory (no {models.ADAPTER_CONFIG}); pass "
                "the --out directory of `aigc tune text`.",
                field="adapter",
            )
        if self.adapter is not None:
            raise ConfigError(
                f"model={self.model!r} is an adapter already; pass one adapter (model=BASE "
                f"adapter={reference!r}, or model={reference!r} alone).",
                field="adapter",
            )
        if not models.same_model(adapter.base, self.model):
            raise ConfigError(
                f"adapter={reference!r} was trained on model={adapter.base!r}, not model={self.model!r}; "
                f"pass model={adapter.base!r}, or model={reference!r} alone.",
                field="adapter",
            )
        return adapter

    def preprocess(self, model: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        chats = _chats(params["messages"], len(prompts))
        return [
            (self._encode(model.tokenizer, prompt, chat, params), seed)
            for prompt, chat, seed in zip(prompts, chats, seeds, strict=True)
        ]

    def forward(self, model: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        import torch

        from .decoding import Settings, decode
        from .sampling import Sampling

        settings = Settings(
            params["max_new_tokens"],
            Sampling(params["temperature"], params["top_k"], params["top_p"]),
            params["repetition_penalty"],
            params["stop"],
            params["streamer"],
            params["compile"],
            on_token=(lambda step, total: self.report("decode", step, total)) if self.reporting else None,
        )
        with torch.inference_mode():
            results = decode(model, items, settings, self.manager.device, self.model)
        self.report("decode", params["max_new_tokens"], params["max_new_tokens"])  # done, also when all stopped early
        return [Output(text, info) for text, info in results]

    def postprocess(self, model: Any, results: list[Output], params: dict[str, Any]) -> list[Output]:
        for output, chat in zip(results, _chats(params["messages"], len(results)), strict=True):
            output.info["runs"] = model.runs  # the precision it ran in: a seed's text differs between them
            if chat is not None:
                output.info["messages"] = chat  # what this output answered, in its own record
        return results

    # --- the model's files --------------------------------------------------------------------------------------
    def _weights_dir(self) -> str:
        """What from_pretrained reads: the source, or for a .gguf file its de-quantised copy (made once)."""
        if self.source.suffix == ".gguf":
            gguf = self.source.file

            def convert(out: Path) -> None:
                what = f"{models.public_name(self.model)}: converting its GGUF file once (about 25 s on 2 cores)"
                if self.reporting:
                    self.report("load", 0, 1, what)
                else:  # nobody shows progress: say it in the log, so a 25-second first call is explained
                    log.warning("aigc: %s; later loads use the cache.", what)
                _dequantise_gguf(gguf, out)

            return str(models.cached_conversion(gguf, "gguf", convert))
        return self.source.load_target

    def _config_dir(self) -> Path | None:
        """A local directory with the model's config and tokenizer files, when there is one without loading."""
        if self.source.suffix == ".gguf":
            return models.converted(self.source.file, "gguf")
        return self.source.path

    def _has_chat_template(self) -> bool | None:
        """From the tokenizer's files, without loading it; None when they are not local yet."""
        directory = self._config_dir()
        if directory is None:
            return None
        directory = Path(self._tokenizer_target(str(directory)))
        if (directory / "chat_template.jinja").exists() or (directory / "chat_template.json").exists():
            return True
        try:
            config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return bool(config.get("chat_template"))

    def _compiles(self) -> bool | None:
        """Whether transformers gives this model's class a static KV cache, read from its config alone."""
        directory = self._config_dir()
        if directory is None:
            return None
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        try:
            model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(directory))]
        except (OSError, ValueError, KeyError):
            return None
        return bool(getattr(model_class, "_can_compile_fullgraph", False))

    def _tokenizer_target(self, target: str) -> str:
        """GPT-2 checkpoints often ship without tokenizer files: use GPT-2's own from the tokenizer pack."""
        path = Path(target)
        if not path.is_dir() or any((path / name).exists() for name in _TOKENIZER_FILES):
            return target
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type != "gpt2":
            raise ModelLoadError(f"model={self.model!r}: {path} has no tokenizer files; save the tokenizer beside it.")
        return str(models.gpt2_tokenizer_dir())

    def _encode(
        self, tokenizer: Any, prompt: str, chat: list[dict[str, str]] | None, params: dict[str, Any]
    ) -> list[int]:
        has_template = getattr(tokenizer, "chat_template", None) is not None
        if params["chat"] and not has_template:
            raise ConfigError(
                f"chat=True, but model={self.model!r} has no chat template (found once its tokenizer "
                "loaded); use chat=False.",
                field="chat",
            )
        turns = chat or [{"role": "user", "content": prompt}]
        if params["system"] and turns[0]["role"] != "system":
            turns = [{"role": "system", "content": params["system"]}, *turns]
        if not (has_template if params["chat"] is None else params["chat"]):
            if not chat:
                return tokenizer(prompt)["input_ids"]
            # a model without a chat template reads the chat as a transcript to continue
            transcript = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in turns) + "Assistant:"
            return tokenizer(transcript)["input_ids"]
        encoded = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])


def _base_fits(cls: type[CausalLMGenerator], adapter: models.Adapter) -> str | None:
    """Why an adapter cannot run here: it is not a LoRA of a causal LM, or its base is missing or no causal LM."""
    config = json.loads((adapter.path / models.ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA" or config.get("task_type") not in (None, "CAUSAL_LM"):
        return (
            f"{adapter.path} is a {config.get('peft_type')} adapter for {config.get('task_type')}, not a LoRA of a "
            "causal language model (what `aigc tune text` makes)."
        )
    try:
        base = models.resolve(adapter.base)
    except ModelLoadError as error:
        return f"its base model {adapter.base!r} is not here: {error}"
    if models.adapter_of(base) is not None:
        return f"its base {adapter.base!r} is an adapter itself; train adapters on a base model."
    reason = cls.model_fits(base)
    return f"its base model {adapter.base!r} does not fit: {reason}" if reason else None


def _merged(model: Any, directory: Path) -> Any:
    """The base with a LoRA adapter merged into its weights: a plain transformers model again, so the decoding
    loop (static cache, torch.compile) runs exactly as on the base, at the base's speed."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(f"adapter {str(directory)!r} needs PEFT: pip install 'aigc[tune]'.") from None
    try:
        return PeftModel.from_pretrained(model, str(directory), is_trainable=False).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        summary = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"adapter {str(directory)!r} does not fit its base model ({summary}); was it trained on another model?"
        ) from error


def _chats(messages: list[Any] | None, count: int) -> list[list[dict[str, str]] | None]:
    """The chat each of `count` outputs answers: none, one for all, or one each."""
    if not messages:
        return [None] * count
    return list(messages) if isinstance(messages[0], list) else [messages] * count


def _dequantise_gguf(source: Path, out: Path) -> None:
    """GGUF -> a plain transformers directory (safetensors), so later loads skip the ~25 s de-quantisation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # the weights are plain float now; transformers refuses to save "quantized" ones
    model.hf_quantizer = None  # type: ignore[assignment]  # set by from_pretrained; PreTrainedModel does not declare it
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

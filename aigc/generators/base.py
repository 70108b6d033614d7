"""The Generator template: check -> load through the device manager -> batched device steps -> outputs.

A backend writes only what is its own, the way transformers pipelines split preprocess / _forward /
postprocess: which models it runs, the checks its knobs need, loading on the CPU, preparing inputs, the
device step and finishing the results. The frame around them (the manager's cache and pins, batches that
halve on out-of-memory) is written once, here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .. import progress
from ..errors import ConfigError, ModelLoadError
from ..records import Refinement
from ..runtime import models
from .knobs import Nudge, Param, describe_value

if TYPE_CHECKING:
    from ..runtime.devices import DeviceManager
    from ..runtime.models import ModelSource

__all__ = ["Generator", "Nudge", "Output", "Param"]


@dataclass
class Output:
    """One raw result of a generator, before it becomes an Asset; `info` is the backend's own report."""

    data: Any
    info: dict[str, Any] = field(default_factory=dict)
    refinement: Refinement | None = None


class Generator:
    """A backend: turns prompts and seeds into outputs in one batched call.

    Subclasses declare `kind`, `family` (what the cached weights are) and `params`, say which models they
    run (`model_fits`), and fill in the steps of `run`: `load` (on the CPU; the manager moves the result to
    the device), `preprocess`, `forward` (the device step, on a chunk of items) and `postprocess`. A
    generator is handed its model reference and device manager; it knows nothing of scoring, saving, the
    CLI or batches.
    """

    kind: ClassVar[str] = ""
    family: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    limits: ClassVar[dict[str, int]] = {}  # this backend's own defaults for limits.py's bounds (prompt_chars...)
    # knobs an output owns like its prompt (one value for all, or one per output): a server merging requests
    # into one batched call passes them per output instead of needing them equal
    per_output: ClassVar[tuple[str, ...]] = ()
    # whether the prompt is what the backend makes something from: aigc refuses an empty prompt for every backend
    # that does (an upscaler's input is its image, so it allows "")
    takes_prompt: ClassVar[bool] = True

    def __init__(self, model: str, manager: DeviceManager, *, backend: str = "", dtype: str | None = None) -> None:
        self.model = model
        self.manager = manager
        self.backend = backend or self.family
        self._dtype = None
        if dtype is not None and str(dtype).strip().lower() != "auto":  # this call's own (aigc.generate(dtype=...)),
            from ..runtime.devices import resolve_dtype  # checked before anything loads

            self._dtype = resolve_dtype(dtype, manager.device)
        self.check_model()

    # --- knobs: every rule lives in the Params; these read them ----------------------------------------------
    @classmethod
    def check_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Every knob with its value: given ones validated, the rest (and any given as None) at their defaults."""
        unknown = sorted(set(given) - set(cls.params))
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r} for {cls.kind} generation; "
                f"allowed: {', '.join(sorted(cls.params))}.",
                field=unknown[0],
            )
        checked = {name: param.check(name, given.get(name)) for name, param in cls.params.items()}
        cls.check_knobs(checked)
        return checked

    @classmethod
    def check_knobs(cls, knobs: dict[str, Any]) -> None:
        """Rules that tie several knobs together (one Param cannot say them); raise ConfigError."""

    @classmethod
    def parse_knobs(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Knob values given as text (command line, CSV cells, `--set`) read as their Params say; unknown names
        are passed through for check_params to refuse with the list of allowed ones."""
        return {
            name: cls.params[name].parse(name, value) if name in cls.params else value for name, value in given.items()
        }

    @classmethod
    def image_input(cls) -> str | None:
        """The knob that takes an input image (image-to-image), if this backend has one."""
        return next((name for name, param in cls.params.items() if param.type == "image"), None)

    @classmethod
    def recorded(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The knobs worth recording in an Asset (those that change the output), as JSON-ready values.

        An in-memory object (a PIL image passed as init_image) is recorded as a description: pass a file
        path instead when the record must reproduce the output on its own.
        """
        return {name: describe_value(value) for name, value in params.items() if cls.params[name].record}

    @classmethod
    def a1111(cls, params: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        """The labelled knobs for A1111's "parameters" string: the value given, or for a knob left to its
        default (None) the value the generator reports it used under the knob's name in `info`."""
        settings: dict[str, Any] = {}
        for name, param in cls.params.items():
            value = params.get(name) if params.get(name) is not None else info.get(name)
            if param.a1111 and value is not None:
                settings[param.a1111] = describe_value(value)
        return settings

    @classmethod
    def nudged(cls, knobs: dict[str, Any], weakest: str) -> dict[str, Any]:
        """The knobs for the scorer's next round: each knob with a Nudge moves for the weakest part."""
        moved = dict(knobs)
        for name, param in cls.params.items():
            if param.nudge is not None and knobs.get(name) is not None:
                value = param.nudge.move(knobs[name], weakest)
                moved[name] = round(value, 4) if param.type == "float" else int(round(value))
        return moved

    # --- the model --------------------------------------------------------------------------------------------
    @classmethod
    def model_fits(cls, source: ModelSource) -> str | None:
        """Why this backend cannot run the model at `source`, or None when it can.

        Reads only the model's own small files (configs, a safetensors header), never its weights. A backend
        that overrides this is also chosen automatically when a request names a model but no backend.
        """
        return None

    @classmethod
    def picks_by_model(cls) -> bool:
        """Whether this backend says which models it runs (and so may be chosen by a model reference)."""
        return cls.model_fits.__func__ is not Generator.model_fits.__func__  # type: ignore[attr-defined]

    def check_model(self) -> None:
        """Resolve the model reference without loading it; raise ModelLoadError if this backend cannot run it.

        Backends that do not say which models they run (plug-ins without model_fits) resolve their own.
        """
        if not self.picks_by_model():
            return
        self.source = models.resolve(self.model)
        reason = self.model_fits(self.source)
        if reason:
            raise ModelLoadError(f"model={self.model!r}: {reason}")

    @property
    def dtype(self):
        """The dtype this generator loads in: the call's own (dtype=), else the manager's."""
        return self._dtype or self.manager.dtype

    @property
    def packs_cpu_weights(self) -> bool:
        """Whether a backend may run a model's own 4-bit file packed instead of in `dtype`: only where aigc chose
        the dtype (no dtype= here, none given to the manager) on a CPU with fast bf16."""
        return self._dtype is None and self.manager.pack_cpu_weights

    # --- the template -----------------------------------------------------------------------------------------
    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Knob defaults that depend on the model (a Turbo model's single step, say); idempotent."""
        return params

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        """Checks of a request that need no weights (files it names, the model's configs), before any load."""

    @classmethod
    def check_pixels(cls, images: int, width: int, height: int) -> None:
        """Refuse a call whose images hold more pixels in all than the megapixels limit (memory, before any load)."""
        from .. import limits

        megapixels = -(-images * width * height // 1_000_000)
        limits.check(
            "megapixels",
            megapixels,
            f"{images:,} image(s) of {width}x{height} pixels, in megapixels",
            cls.limits,
            field="n",
        )

    def needs_objective(self, params: dict[str, Any]) -> bool:
        """Whether these knobs climb an objective none was given for (aigc.generate then hands in the scorer's)."""
        return False

    def variant(self, params: dict[str, Any]) -> dict[str, Any]:
        """Load-time switches that make another cached copy of the model (part of its cache key)."""
        return {}

    def load(self) -> Any:
        """The model (or a record of its modules) on the CPU, in the manager's dtype; a backend with a `variant`
        takes its switches as keywords."""
        raise NotImplementedError

    def preprocess(self, model: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        """The work items, one per output, prepared on the CPU (tokens, latents...)."""
        return list(zip(prompts, seeds, strict=True))

    def forward(self, model: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Any]:
        """The device step over a chunk of items; every item keeps its own seed, so chunking never changes it."""
        raise NotImplementedError

    def postprocess(self, model: Any, results: list[Any], params: dict[str, Any]) -> list[Output]:
        """The chunks' results as Outputs, finished on the CPU."""
        return results

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        """Outputs for prompts[i] with seeds[i]: resolve, check, then run (params as check_params returns them)."""
        params = self.resolve(params)
        self.check(prompts, seeds, params)
        return self.run(prompts, seeds, params)

    def run(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> list[Output]:
        """The frame every backend shares: the model through the manager (pinned while in use), preprocess, the
        device step in batches that halve on out-of-memory, postprocess (generate() checks first)."""
        with self.loaded(params) as model:
            items = self.preprocess(model, list(prompts), list(seeds), params)
            done = [0]

            def step(chunk: Sequence[Any]) -> list[Any]:
                results = self.forward(model, chunk, params)
                done[0] += len(chunk)
                self.report("generate", done[0], len(items))
                return results

            results = self.manager.run_batched(step, items, params.get("batch_size"))
            return self.postprocess(model, results, params)

    def report(self, stage: str, step: int, total: int, detail: str = "") -> None:
        """Tell whoever asked (a server's events, a terminal's bars: progress.py) how far the work is."""
        progress.report(stage, step, total, detail)

    @property
    def reporting(self) -> bool:
        """Whether anyone listens to report(): per-step callbacks are passed to the device code only then."""
        return progress.active()

    @contextmanager
    def loaded(self, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """The loaded model for these knobs' variant, pinned in the manager's cache while the block runs."""
        variant = self.variant(params if params is not None else self.check_params({}))
        key = self.manager.key(self.family, self.model, self.dtype, variant)
        with self.manager.use(key, lambda: self._load_or_explain(variant)) as model:
            yield model

    def _load_or_explain(self, variant: dict[str, Any]) -> Any:
        """load(), with whatever a damaged model makes a library raise turned into one ModelLoadError."""
        from ..errors import AIGCError
        from ..runtime.devices import is_out_of_memory

        try:
            return self.load(**variant)
        except AIGCError:
            raise
        except Exception as error:  # noqa: BLE001 - safetensors, torch, transformers, onnx each raise their own
            if is_out_of_memory(error):
                raise
            summary = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise ModelLoadError(
                f"model={self.model!r} could not be loaded ({type(error).__name__}: {summary}); "
                "is it complete and undamaged?"
            ) from error

"""Chained workflows: each step is a generate call whose prompt is a template over earlier steps' outputs.

A step that refers to a step with several outputs runs once per output (fan-out); `split: paragraphs`
runs it once per paragraph of the text it refers to; `input:` hands an earlier image to image-to-image.
The whole plan is checked (placeholders, cycles, kinds) before any model loads, and every asset records
the step and parents it came from. Models no later step needs are released as soon as they are done.
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from . import registry
from . import seeds as seed_rule
from .assets import Asset
from .errors import ConfigError
from .records import WorkflowLink

SPLITS = ("paragraphs", "sentences")


@dataclass
class Step:
    name: str
    kind: str
    prompt: str
    backend: str | None = None
    model: str | None = None
    n: int = 1
    seed: int | None = None
    best_of: int | None = None
    min_score: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    input: str | None = None  # an earlier image step whose output is this step's init_image
    split: str | None = None  # run once per paragraph / sentence of the text it refers to
    join: bool = False  # audio: also keep the step's clips joined into one


@dataclass
class Pipeline:
    steps: list[Step]
    inputs: dict[str, str] = field(default_factory=dict)

    def references(self, step: Step) -> list[str]:
        """Names a step's prompt refers to, in order (inputs and steps)."""
        names = [f for _, f, _, _ in string.Formatter().parse(step.prompt) if f]
        return [*names, *([step.input] if step.input else [])]


def check(pipeline: Pipeline, values: dict[str, str]) -> list[Step]:
    """The steps in a runnable order, or a ConfigError naming the step and what to change. Loads nothing."""
    steps = {s.name: s for s in pipeline.steps}
    if len(steps) != len(pipeline.steps):
        raise ConfigError("two steps share a name; give every step its own name.")
    unknown_inputs = set(values) - set(pipeline.inputs)
    if unknown_inputs:
        raise ConfigError(f"unknown input {sorted(unknown_inputs)[0]!r}; this pipeline takes: "
                          f"{', '.join(pipeline.inputs) or '(none)'}.")
    graph: dict[str, set[str]] = {}
    for step in pipeline.steps:
        spec = registry.get(step.kind, step.backend, step.model)
        if not step.prompt.strip():
            raise ConfigError(f"step {step.name!r}: the prompt is empty.")
        if step.split is not None and step.split not in SPLITS:
            raise ConfigError(f"step {step.name!r}: split={step.split!r}; use 'paragraphs' or 'sentences'.")
        if step.join and step.kind != "audio":
            raise ConfigError(f"step {step.name!r}: join only applies to audio steps.")
        graph[step.name] = set()
        for ref in pipeline.references(step):
            if ref in pipeline.inputs:
                continue
            if ref not in steps:
                raise ConfigError(f"step {step.name!r}: unknown placeholder {{{ref}}}; use an input "
                                  f"({', '.join(pipeline.inputs) or 'none'}) or an earlier step ({', '.join(steps)}).")
            graph[step.name].add(ref)
            if ref != step.input and steps[ref].kind != "text":
                article = "an" if steps[ref].kind[0] in "aeiou" else "a"
                raise ConfigError(f"step {step.name!r}: {{{ref}}} is {article} {steps[ref].kind} step; a prompt can only "
                                  "use text steps and inputs.")
        if step.input is not None:
            if step.kind != "image" or steps[step.input].kind != "image":
                raise ConfigError(f"step {step.name!r}: input: passes an image to an image step; "
                                  f"{step.input!r} is {steps[step.input].kind} and {step.name!r} is {step.kind}.")
            if spec.load().image_input() is None:
                raise ConfigError(f"step {step.name!r}: backend {spec.name!r} takes no input image; "
                                  "use backend: diffusion for image-to-image.")
        spec.load().check_params(step.params)  # unknown or out-of-range knobs fail now, not mid-run
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise ConfigError(f"the steps refer to each other in a cycle: {' -> '.join(error.args[1])}.") from None
    return [steps[name] for name in order]


def _pieces(text: str, split: str | None) -> list[str]:
    if split == "paragraphs":
        parts = re.split(r"\n\s*\n", text)
    elif split == "sentences":
        parts = re.split(r"(?<=[.!?])\s+", text)
    else:
        parts = [text]
    return [p.strip() for p in parts if p.strip()] or [text]


def run(pipeline: Pipeline, values: dict[str, str] | None = None, *, seed: int = 0, manager=None,
        library: Any = None) -> dict[str, list[Asset]]:
    """Run every step; returns step name -> its assets (all intermediate assets are kept).

    `library` is what scored steps (best_of / min_score) judge novelty against and add to (none by default).
    """
    from tqdm.auto import tqdm

    from .devices import get_manager

    values = {**pipeline.inputs, **(values or {})}
    order = check(pipeline, values)
    seed_rule.check(seed)
    manager = manager or get_manager()
    produced: dict[str, list[Asset]] = {}
    for index, step in enumerate(tqdm(order, desc="workflow", unit="step", disable=None)):
        outputs = _run_step(pipeline, step, values, produced, seed, manager, library)
        if step.join:
            outputs.append(_joined(step, outputs))
        for i, asset in enumerate(outputs):
            asset.workflow.id = f"{step.name}-{i}"
        produced[step.name] = outputs
        _release_finished(order, index, step, manager)
    return produced


def step_seed(step: Step, run_seed: int, piece: int) -> int:
    """The seed of one call of a step (one per fan-out piece): derived from the run's seed and the step's name,
    or the step's own seed for its first piece. Every call's outputs then count up from it."""
    if step.seed is not None:
        return step.seed if piece == 0 else seed_rule.derive(step.seed, "piece", piece)
    return seed_rule.derive(run_seed, "step", step.name, "piece", piece)


def _run_step(pipeline: Pipeline, step: Step, values: dict[str, str], produced: dict[str, list[Asset]],
              run_seed: int, manager: Any, library: Any) -> list[Asset]:
    """One step's generate calls: once, or once per output of the step it fans out from (and per piece)."""
    from .api import generate

    refs = [r for r in pipeline.references(step) if r in produced]
    fanned = [r for r in refs if len(produced[r]) > 1]
    if len(fanned) > 1:
        raise ConfigError(f"step {step.name!r} refers to {fanned[0]!r} and {fanned[1]!r}, which both have "
                          "several outputs; keep one of them to a single output.")
    driver = fanned[0] if fanned else (refs[0] if step.split and refs else None)
    outputs: list[Asset] = []
    piece_index = 0
    for parent in (produced[driver] if driver else [None]):
        texts = {r: produced[r][0].data for r in refs if produced[r][0].kind == "text"}
        if parent is not None and parent.kind == "text":
            texts[driver] = parent.data
        for piece in (_pieces(texts[driver], step.split) if step.split and driver else [None]):
            fields = {**values, **texts, **({driver: piece} if piece is not None else {})}
            params = dict(step.params)
            if step.input:
                knob = registry.get(step.kind, step.backend, step.model).load().image_input()
                params[knob] = (parent if driver == step.input else produced[step.input][0]).data
            assets = generate(step.kind, step.prompt.format(**fields).strip(), backend=step.backend, model=step.model,
                              n=step.n, seed=step_seed(step, run_seed, piece_index), best_of=step.best_of,
                              min_score=step.min_score, library=library if step.best_of or step.min_score else None,
                              manager=manager, **params)
            piece_index += 1
            parents = [_asset_id(parent)] if parent else [f"{r}-0" for r in refs]
            for asset in assets:
                asset.workflow = WorkflowLink(step.name, parents)
            outputs += assets
    return outputs


def _asset_id(asset: Asset | None) -> str | None:
    return asset.workflow.id if asset is not None and asset.workflow is not None else None


def _joined(step: Step, clips: list[Asset]) -> Asset:
    """One audio asset with the step's clips in order, half a second apart."""
    from .audio import Audio, join

    rate = clips[0].data.sample_rate
    samples = join([c.data.samples for c in clips], rate, 0.5)
    first = clips[0]
    return Asset("audio", Audio(samples, rate), prompt=" ".join(c.prompt for c in clips), seed=first.seed,
                 backend=first.backend, model=first.model, params=dict(first.params), info={"joined": len(clips)},
                 workflow=WorkflowLink(step.name, [_asset_id(c) for c in clips]))


def _release_finished(order: list[Step], index: int, step: Step, manager) -> None:
    """Free a model once no later step uses it, so the next (often bigger) model has the memory."""
    spec = registry.get(step.kind, step.backend, step.model)
    model = step.model or spec.default_model
    later = set()
    for other in order[index + 1:]:
        other_spec = registry.get(other.kind, other.backend, other.model)
        later.add((other_spec.target, other.model or other_spec.default_model))
    if (spec.target, model) not in later:
        manager.release(spec.load().family, model)


def resolved(pipeline: Pipeline, values: dict[str, str], seed: int) -> dict[str, Any]:
    """The pipeline as it ran: what run.json keeps so `--replay` reproduces it."""
    return {"inputs": {**pipeline.inputs, **values}, "seed": seed, "steps": [asdict(s) for s in pipeline.steps]}


def from_resolved(record: dict[str, Any]) -> tuple[Pipeline, dict[str, str], int]:
    pipeline = Pipeline([Step(**s) for s in record["steps"]], dict(record["inputs"]))
    return pipeline, dict(record["inputs"]), int(record["seed"])


def chain(*steps: Step, inputs: dict[str, str] | None = None, seed: int = 0, manager=None, library: Any = None,
          **values: str) -> dict[str, list[Asset]]:
    """`aigc.chain(Step(...), Step(...), topic="...")`: build and run a pipeline in one call."""
    return run(Pipeline(list(steps), dict(inputs or {k: "" for k in values})), values, seed=seed, manager=manager,
               library=library)


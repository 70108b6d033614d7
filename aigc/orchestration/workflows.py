"""Chained workflows: each step is a generate call whose prompt is a template over earlier steps' outputs.

A step that refers to a step with several outputs runs once per output (fan-out); `split: paragraphs`
runs it once per paragraph of the text it refers to; `input:` hands an earlier image to image-to-image.
The whole plan is checked (placeholders, cycles, kinds) before any model loads, and every asset records
the step and parents it came from. Models no later step needs are released as soon as they are done.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any, Protocol

from .. import checks, console, limits
from .. import seeds as seed_rule
from ..errors import ConfigError, GenerationError
from ..media.assets import Asset
from ..progress import report as report_progress
from ..records import Progress, WorkflowLink
from ..runtime import registry
from . import templates

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
    # params may also take an earlier image step's first image as {"step": NAME} wherever an image goes (a mask,
    # a ControlNet entry's image): see step_images()
    split: str | None = None  # run once per paragraph / sentence of the text it refers to
    join: bool = False  # audio: also keep the step's clips joined into one


@dataclass
class Pipeline:
    steps: list[Step]
    inputs: dict[str, str] = field(default_factory=dict)

    def references(self, step: Step) -> list[str]:
        """Names a step's prompt refers to, in order (inputs and steps), and its input step."""
        try:
            names = templates.placeholders(step.prompt)
        except ConfigError as error:
            raise ConfigError(f"step {step.name!r}: {error}", field="prompt") from None
        images = [name for name in [step.input, *step_images(step.params)] if name and name not in names]
        return [*names, *dict.fromkeys(images)]

    def fanning(self, step: Step) -> list[str]:
        """The references a step fans out over (one call per output): all but those only its params' images name
        ({"step": NAME} takes that step's first image)."""
        only_images = set(step_images(step.params)) - {step.input} - set(templates.placeholders(step.prompt))
        return [name for name in self.references(step) if name not in only_images]


STEP_KEY = "step"


def step_reference(value: Any) -> str | None:
    """The step a value names as {"step": NAME} (an earlier image step's first image), else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(STEP_KEY), str):
        return value[STEP_KEY]
    return None


def step_images(value: Any) -> list[str]:
    """The steps a step's params take images from, in order: {"step": NAME} anywhere in them (a mask, a control
    entry's image)."""
    name = step_reference(value)
    if name is not None:
        return [name]
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [found for item in inner for found in step_images(item)]


def with_step_images(value: Any, image_of: Any) -> Any:
    """The params with each {"step": NAME} replaced by `image_of(NAME)` (an image, or a stand-in for checks)."""
    name = step_reference(value)
    if name is not None:
        return image_of(name)
    if isinstance(value, dict):
        return {key: with_step_images(item, image_of) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [with_step_images(item, image_of) for item in value]
    return value


def checkable(step: Step, image_knob: str | None) -> dict[str, Any]:
    """The step's params with a stand-in image for each image an earlier step gives it (`input` as `image_knob`,
    and each {"step": NAME}), so the knobs' own checks can read them before anything runs."""
    from PIL import Image

    def stand_in(_name: str) -> Any:
        return Image.new("RGB", (64, 64))

    params = with_step_images(step.params, stand_in)
    if step.input and image_knob:
        params[image_knob] = stand_in(step.input)
    return params


class Journal(Protocol):
    """Where a run keeps each call's assets as they finish, so a killed run resumes (recipes.py writes one)."""

    def recall(self, step: str, call: int) -> list[Asset] | None: ...

    def record(self, step: str, call: int, assets: list[Asset]) -> None: ...


def check(pipeline: Pipeline, values: dict[str, str]) -> list[Step]:
    """The steps in a runnable order, or a ConfigError naming the step and what to change. Loads nothing."""
    if not pipeline.steps:
        raise ConfigError("a workflow needs at least one step.", field="steps")
    limits.check("steps", len(pipeline.steps), "the number of steps in this workflow", field="steps")
    strays = [s for s in pipeline.steps if not isinstance(s, Step)]
    if strays:
        raise ConfigError(f"a workflow's steps are Step(...)s, not {type(strays[0]).__name__}.", field="steps")
    steps = {s.name: s for s in pipeline.steps}
    if len(steps) != len(pipeline.steps):
        raise ConfigError("two steps share a name; give every step its own name.", field="name")
    _check_inputs(pipeline, values)
    graph = {step.name: _check_step(pipeline, step, steps) for step in pipeline.steps}
    try:
        order = [steps[name] for name in TopologicalSorter(graph).static_order()]
    except CycleError as error:
        raise ConfigError(f"the steps refer to each other in a cycle: {' -> '.join(error.args[1])}.") from None
    _check_sizes(pipeline, order)
    return order


def planned_outputs(pipeline: Pipeline, order: list[Step]) -> dict[str, int]:
    """Each step's assets as the plan counts them (a split counts one piece per text: its pieces are known only
    once the text is)."""
    return _check_sizes(pipeline, order)


def _check_sizes(pipeline: Pipeline, order: list[Step]) -> dict[str, int]:
    """Each step's calls and outputs counted from the plan, within the limits (a split's pieces are known only
    once its text is, so they are counted again at run time)."""
    outputs: dict[str, int] = {}
    for step in order:
        refs = [r for r in pipeline.fanning(step) if r in outputs]
        fanned = [r for r in refs if outputs[r] > 1]
        if len(fanned) > 1:
            raise ConfigError(
                f"step {step.name!r} refers to {fanned[0]!r} and {fanned[1]!r}, which both have "
                "several outputs; keep one of them to a single output.",
                field="prompt",
            )
        calls = outputs[fanned[0]] if fanned else 1
        limits.check("calls_per_step", calls, f"the generate calls step {step.name!r} fans out to")
        limits.check("outputs", step.best_of or step.n, f"the outputs of each call of step {step.name!r}", field="n")
        outputs[step.name] = calls * step.n + (1 if step.join else 0)
        limits.check(
            "run_assets", sum(outputs.values()), f"the assets this workflow makes up to step {step.name!r}", field="n"
        )
    return outputs


def _check_inputs(pipeline: Pipeline, values: dict[str, str]) -> None:
    unknown = set(values) - set(pipeline.inputs)
    if unknown:
        raise ConfigError(
            f"unknown input {sorted(unknown)[0]!r}; this pipeline takes: {', '.join(pipeline.inputs) or '(none)'}.",
            field="inputs",
        )
    for name, value in {**pipeline.inputs, **values}.items():
        if not isinstance(value, str):
            raise ConfigError(
                f"input {name!r} must be text, not {type(value).__name__} ({value!r:.40}).", field="inputs"
            )
        checks.plain_text(f"input {name!r}", value, field="inputs")


def _check_step(pipeline: Pipeline, step: Step, steps: dict[str, Step]) -> set[str]:
    """One step's own rules and knobs; the earlier steps it refers to."""
    if not isinstance(step.name, str) or not re.fullmatch(templates.NAME, step.name) or len(step.name) > 64:
        raise ConfigError(
            f"step name {step.name!r:.70} must be letters, digits and underscores (at most 64), "
            "starting with a letter or underscore: it names the step's files.",
            field="name",
        )
    where = f"step {step.name!r}"
    if not isinstance(step.prompt, str) or not step.prompt.strip():
        raise ConfigError(f"{where}: the prompt is empty.", field="prompt")
    checks.plain_text(f"{where}'s prompt", step.prompt)
    checks.whole("n", step.n, least=1)
    if step.seed is not None:
        seed_rule.check(step.seed)
    from ..api import check_loop

    check_loop(step.n, step.seed, step.best_of, step.min_score, None, False)
    spec = registry.get(step.kind, step.backend, step.model)
    if step.split is not None and step.split not in SPLITS:
        raise ConfigError(f"{where}: split={step.split!r}; use 'paragraphs' or 'sentences'.", field="split")
    if step.join and step.kind != "audio":
        raise ConfigError(f"{where}: join only applies to audio steps.", field="join")
    for name in step_images(step.params):
        if name not in steps or steps[name].kind != "image" or name == step.name:
            raise ConfigError(
                f"{where}: {{step: {name}}} takes an earlier image step's image; {name!r} is "
                f"{'not an image step' if name in steps else 'no step'} (image steps: "
                f"{', '.join(s for s in steps if steps[s].kind == 'image' and s != step.name) or 'none'}).",
                field="params",
            )
    parents = _check_references(pipeline, step, steps)
    if step.input is not None:
        if step.kind != "image" or steps[step.input].kind != "image":
            raise ConfigError(
                f"{where}: input: passes an image to an image step; {step.input!r} is "
                f"{steps[step.input].kind} and {step.name!r} is {step.kind}.",
                field="input",
            )
        if spec.load().image_input() is None:
            raise ConfigError(
                f"{where}: backend {spec.name!r} takes no input image; use backend: diffusion for image-to-image.",
                field="input",
            )
    # unknown or out-of-range knobs fail now, not mid-run
    spec.load().check_params(checkable(step, spec.load().image_input()))
    return parents


def _check_references(pipeline: Pipeline, step: Step, steps: dict[str, Step]) -> set[str]:
    parents = set()
    for ref in pipeline.references(step):
        if ref in pipeline.inputs:
            continue
        if ref not in steps:
            raise ConfigError(
                f"step {step.name!r}: unknown placeholder {{{ref}}}; use an input "
                f"({', '.join(pipeline.inputs) or 'none'}) or an earlier step ({', '.join(steps)}).",
                field="prompt",
            )
        parents.add(ref)
        if ref != step.input and ref not in step_images(step.params) and steps[ref].kind != "text":
            article = "an" if steps[ref].kind[0] in "aeiou" else "a"
            raise ConfigError(
                f"step {step.name!r}: {{{ref}}} is {article} {steps[ref].kind} step; a prompt can only "
                "use text steps and inputs.",
                field="prompt",
            )
    return parents


def _pieces(text: str, split: str | None) -> list[str]:
    if split == "paragraphs":
        parts = re.split(r"\n\s*\n", text)
    elif split == "sentences":
        parts = re.split(r"(?<=[.!?])\s+", text)
    else:
        parts = [text]
    return [p.strip() for p in parts if p.strip()] or [text]


def run(
    pipeline: Pipeline,
    values: dict[str, str] | None = None,
    *,
    seed: int | None = None,
    manager=None,
    library: Any = None,
    journal: Journal | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, list[Asset]]:
    """Run every step; returns step name -> its assets (all intermediate assets are kept).

    `seed` is the run's (each call of a step derives its own from it); None draws a fresh one.

    `library` is what scored steps (best_of / min_score) judge novelty against and add to (none by default).
    `journal` keeps each call's assets as it finishes and hands back those a killed run already made.
    `progress` hears each step and the work inside it (as for aigc.generate; None: bars on a terminal).
    """
    from ..runtime.devices import get_manager

    values = {**pipeline.inputs, **(values or {})}
    order = check(pipeline, values)
    seed = seed_rule.chosen(seed)
    manager = manager or get_manager()
    specs = {step.name: registry.get(step.kind, step.backend, step.model) for step in order}
    last_use = {_model_of(step, specs): index for index, step in enumerate(order)}  # linear, not steps x steps
    produced: dict[str, list[Asset]] = {}
    with console.scope(progress):
        for index, step in enumerate(order):
            report_progress("workflow", index, len(order), detail=step.name)
            produced[step.name] = _run_step(pipeline, step, values, produced, seed, manager, library, journal)
            model = _model_of(step, specs)
            if last_use[model] == index:  # no later step uses it: free it for the next (often bigger) model
                manager.release(specs[step.name].load().family, model[1])
        report_progress("workflow", len(order), len(order), detail=order[-1].name if order else "")
    return produced


def step_seed(step: Step, run_seed: int, piece: int) -> int:
    """The seed of one call of a step (one per fan-out piece): derived from the run's seed and the step's name,
    or the step's own seed for its first piece. Every call's outputs then count up from it."""
    if step.seed is not None:
        return step.seed if piece == 0 else seed_rule.derive(step.seed, "piece", piece)
    return seed_rule.derive(run_seed, "step", step.name, "piece", piece)


def _calls(
    pipeline: Pipeline, step: Step, values: dict[str, str], produced: dict[str, list[Asset]]
) -> list[tuple[Asset | None, dict[str, str], list[str]]]:
    """A step's generate calls: (parent asset, template fields, parent ids) for each output of the step it
    fans out from, and for each piece of a split text."""
    refs = [r for r in pipeline.references(step) if r in produced]
    fanned = [r for r in pipeline.fanning(step) if r in produced and len(produced[r]) > 1]
    if len(fanned) > 1:
        raise ConfigError(
            f"step {step.name!r} refers to {fanned[0]!r} and {fanned[1]!r}, which both have "
            "several outputs; keep one of them to a single output."
        )
    driver = fanned[0] if fanned else (refs[0] if step.split and refs else None)
    calls: list[tuple[Asset | None, dict[str, str], list[str]]] = []
    for parent in produced[driver] if driver else [None]:
        # generated text flows into prompts, made printable (a model may emit control characters)
        texts = {r: checks.printable(produced[r][0].data) for r in refs if produced[r][0].kind == "text"}
        if driver and parent is not None and parent.kind == "text":  # parent: one of the driver's outputs
            texts[driver] = checks.printable(parent.data)
        parents = [_asset_id(parent)] if parent else [f"{r}-0" for r in refs]
        for piece in _pieces(texts[driver], step.split) if step.split and driver else [None]:
            fields = {**values, **texts, **({driver: piece} if driver and piece is not None else {})}
            calls.append((parent if driver == step.input else None, fields, parents))
    limits.check("calls_per_step", len(calls), f"the generate calls step {step.name!r} fans out to")
    return calls


def _run_step(
    pipeline: Pipeline,
    step: Step,
    values: dict[str, str],
    produced: dict[str, list[Asset]],
    run_seed: int,
    manager: Any,
    library: Any,
    journal: Journal | None,
) -> list[Asset]:
    """One step: each of its calls (recalled from the journal when a killed run made it), then the join."""
    from ..api import generate

    outputs: list[Asset] = []
    calls = _calls(pipeline, step, values, produced)
    for call, (image_parent, fields, parents) in enumerate(calls):
        assets = journal.recall(step.name, call) if journal else None
        if assets is None:
            params = with_step_images(dict(step.params), lambda name: produced[name][0].data)
            if step.input:
                knob = registry.get(step.kind, step.backend, step.model).load().image_input()
                assert knob is not None  # check() refuses an input image to a backend that takes none
                params[knob] = (image_parent or produced[step.input][0]).data
            prompt = templates.render(step.prompt, fields).strip()
            if not prompt:
                raise GenerationError(
                    f"step {step.name!r}: its prompt came out empty (the text it takes from "
                    f"{', '.join(parents) or 'its inputs'} is empty); give that step more to say "
                    "(e.g. more max_new_tokens) or a prompt with words of its own."
                )
            assets = generate(
                step.kind,
                prompt,
                backend=step.backend,
                model=step.model,
                n=step.n,
                seed=step_seed(step, run_seed, call),
                best_of=step.best_of,
                min_score=step.min_score,
                library=library if step.best_of or step.min_score else None,
                manager=manager,
                **params,
            )
            for i, asset in enumerate(assets):
                asset.workflow = WorkflowLink(step.name, parents, f"{step.name}-{len(outputs) + i}")
            if journal:
                journal.record(step.name, call, assets)
        outputs += assets
    if step.join:
        joined = journal.recall(step.name, len(calls)) if journal else None
        if joined is None:
            joined = [_joined(step, outputs)]
            if journal:
                journal.record(step.name, len(calls), joined)
        outputs += joined
    return outputs


def _model_of(step: Step, specs: dict[str, registry.BackendSpec]) -> tuple[str, str | None]:
    spec = specs[step.name]
    return spec.target, step.model or spec.default_model


def _asset_id(asset: Asset) -> str:
    """An output's id in the run ("poster-0"): each asset a step makes, joins or recalls carries its WorkflowLink."""
    assert asset.workflow is not None
    return asset.workflow.id


def _joined(step: Step, clips: list[Asset]) -> Asset:
    """One audio asset with the step's clips in order, half a second apart."""
    from ..media.audio import Audio, join

    rate = clips[0].data.sample_rate
    samples = join([c.data.samples for c in clips], rate, 0.5)
    first = clips[0]
    return Asset(
        "audio",
        Audio(samples, rate),
        prompt=" ".join(c.prompt for c in clips),
        seed=first.seed,
        backend=first.backend,
        model=first.model,
        params=dict(first.params),
        info={"joined": len(clips)},
        workflow=WorkflowLink(step.name, [_asset_id(c) for c in clips], f"{step.name}-{len(clips)}"),
    )


def resolved(pipeline: Pipeline, values: dict[str, str], seed: int) -> dict[str, Any]:
    """The pipeline as it ran: what run.json keeps so `--replay` reproduces it."""
    return {"inputs": {**pipeline.inputs, **values}, "seed": seed, "steps": [asdict(s) for s in pipeline.steps]}


def from_resolved(record: dict[str, Any]) -> tuple[Pipeline, dict[str, str], int]:
    """The pipeline, inputs and seed a run recorded (run.json is a file: check() vets it like any recipe)."""
    pipeline = Pipeline([Step(**s) for s in record["steps"]], dict(record["inputs"]))
    return pipeline, dict(record["inputs"]), seed_rule.check(record["seed"])


def chain(
    *steps: Step,
    inputs: dict[str, str] | None = None,
    seed: int | None = None,
    manager=None,
    library: Any = None,
    **values: str,
) -> dict[str, list[Asset]]:
    """`aigc.chain(Step(...), Step(...), topic="...")`: build and run a pipeline in one call."""
    return run(
        Pipeline(list(steps), dict(inputs or {k: "" for k in values})),
        values,
        seed=seed,
        manager=manager,
        library=library,
    )

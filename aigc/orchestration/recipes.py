"""YAML pipeline recipes: a schema that points at the line and field that is wrong, and run directories.

A run directory holds every asset (`<step>-<i>.txt|png|wav` with their metadata), `run.json` (the resolved
pipeline, seeds, versions, timings, scores; `aigc run --replay run.json` reproduces the run) and
`index.html`, the chain step by step. A step's knobs are checked against its backend's own declarations
when the file is read, so a bad knob also names its line.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .. import seeds as seed_rule
from ..checks import plain_text
from ..errors import AIGCError, ConfigError, one_of
from ..media import formats
from ..media.assets import Asset, __version__, load
from ..runtime import registry
from ..seeds import MAX_SEED
from ..storage import append_jsonl, clean_partial, locked_dir, path_arg, read_jsonl, read_text, unique_path, write_json
from .templates import placeholders
from .workflows import Pipeline, Step, check, checkable, from_resolved, resolved
from .workflows import run as run_pipeline


class StepSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    kind: str
    prompt: StrictStr
    backend: StrictStr | None = None
    model: StrictStr | None = None
    n: StrictInt = Field(1, ge=1)
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED)
    best_of: StrictInt | None = Field(None, ge=1)
    min_score: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)
    input: StrictStr | None = None
    split: Literal["paragraphs", "sentences"] | None = None
    join: StrictBool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        known = registry.kinds()  # the registry owns the kinds, plug-ins' included
        if kind not in known:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": one_of(known)})
        return kind


class RecipeSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, StrictStr] = Field(default_factory=dict)
    steps: list[StepSchema] = Field(min_length=1)


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML without aliases: `*name` lets a few lines stand for gigabytes (a "billion laughs" file)."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's own signature
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in a recipe; write the value out", mark
            )
        return super().compose_node(parent, index)


def load_recipe(path: str | os.PathLike) -> Pipeline:
    """Parse and validate a recipe file; errors name the file, line and field."""
    path = path_arg(path, "recipe")
    return parse_recipe(read_text(path, "recipe"), str(path))


def parse_recipe(
    text: str,
    where: str = "recipe",
    model_reference: Callable[[str | None, str], str | None] | None = None,
    file_reference: Callable[[Step], dict[str, Any]] | None = None,
) -> Pipeline:
    """Parse and validate a recipe's YAML text (a server's inline recipe); errors name `where`, line and field.

    `model_reference(model, field)` turns each step's model into the reference to use (a server maps the names
    of its models directory, and refuses paths) before the steps are checked; `file_reference(step)` does the same
    for the knobs that read files (a prior, an adapter, an input image), returning the step's params to use.
    """
    from .. import limits

    limits.check("file_mb", -(-len(text.encode("utf-8", "replace")) // 2**20), f"the size of {where} in MiB")
    path = where
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
        tree = yaml.compose(text, Loader=_RecipeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(f"{path}{where}: not valid YAML ({problem}).") from None
    except RecursionError:
        raise ConfigError(f"{path}: its YAML is nested too deeply to be a recipe.") from None
    try:
        recipe = RecipeSchema.model_validate(data if data is not None else {})
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}:{_line(tree, first['loc'])}: {field}: {first['msg']}.") from None
    steps = [Step(**s.model_dump()) for s in recipe.steps]
    for index, step in enumerate(steps):
        if model_reference is not None:
            try:
                step.model = model_reference(step.model, f"steps.{index}.model")
            except ConfigError as error:
                loc = ("steps", index, "model")
                raise ConfigError(
                    f"{path}:{_line(tree, loc)}: steps.{index}.model: {error}", field=error.field
                ) from None
        if file_reference is not None:
            step.params = _files(path, tree, index, step, file_reference)
        _check_step(path, tree, index, step)
    return Pipeline(steps, dict(recipe.inputs))


def _files(
    path: str, tree: Any, index: int, step: Step, file_reference: Callable[[Step], dict[str, Any]]
) -> dict[str, Any]:
    """The step's params with its file knobs as `file_reference` resolves them; an error names the knob's line."""
    try:
        return file_reference(step)
    except ConfigError as error:
        loc = ("steps", index, "params", *([error.field] if error.field else []))
        raise ConfigError(f"{path}:{_line(tree, loc)}: {'.'.join(map(str, loc))}: {error}", field=error.field) from None


def _check_step(path: str, tree: Any, index: int, step: Step) -> None:
    """A step's prompt template, backend and knobs (against the backend's own declarations), each error at its
    line."""

    def fail(loc: tuple, error: Exception) -> ConfigError:
        return ConfigError(f"{path}:{_line(tree, loc)}: {'.'.join(map(str, loc))}: {error}")

    try:
        placeholders(step.prompt)
        plain_text("the prompt", step.prompt)
    except ConfigError as error:
        raise fail(("steps", index, "prompt"), error) from None
    try:
        spec = registry.get(step.kind, step.backend, step.model)
    except AIGCError as error:
        raise fail(("steps", index, "backend" if step.backend else "model"), error) from None
    try:
        spec.load().check_params(checkable(step, spec.load().image_input()))
    except ConfigError as error:
        raise fail(("steps", index, "params", *([error.field] if error.field else [])), error) from None


def override(pipeline: Pipeline, sets: dict[str, str]) -> dict[str, str]:
    """Apply `--set` pairs: `step.knob=VALUE` sets a step's knob (read as its Param says), `name=VALUE` an input.

    Returns the inputs; the steps are changed in place.
    """
    values: dict[str, str] = {}
    steps = {s.name: s for s in pipeline.steps}
    for key, value in sets.items():
        step_name, dot, knob = key.partition(".")
        if not dot:
            values[key] = value
            continue
        if step_name not in steps:
            raise ConfigError(f"--set {key}: no step {step_name!r}; steps: {', '.join(steps)}.", field="set")
        step = steps[step_name]
        knob = knob.replace("-", "_")
        step.params[knob] = registry.get(step.kind, step.backend, step.model).load().parse_knobs({knob: value})[knob]
    return values


def _line(node: Any, loc: tuple) -> int:
    """The 1-based line of the deepest YAML node that `loc` (a pydantic error location) reaches."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == part]
            keys = [k for k, _ in node.value if k.value == part]
            if not match:
                break
            line = keys[0].start_mark.line + 1
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def run(
    recipe: str | os.PathLike, out: str | os.PathLike | None = None, *, seed: int | None = None, **inputs: str
) -> Any:
    """Run a YAML recipe (`aigc.run("pipelines/story_to_poster.yaml", topic="a city of glass")`).

    Returns step name -> its assets; with `out`, also writes the run directory (assets, run.json, index.html)
    and returns the path of its run.json. Without a seed the run draws one (recorded in run.json); an unfinished
    run in `out` resumes with the seed it recorded.
    """
    pipeline = load_recipe(recipe)
    if out is None:
        return run_pipeline(pipeline, inputs, seed=seed)
    return run_to_dir(pipeline, inputs, path_arg(out, "out", field="out"), seed=seed, source=str(recipe))


def default_out(stem: str, seed: int) -> Path:
    """Where a run goes when no directory is named: a new runs/<recipe>-<seed>, never an earlier run's."""
    return unique_path(Path("runs"), f"{stem}-{seed}")


def run_to_dir(
    pipeline: Pipeline,
    values: dict[str, str],
    out: str | Path,
    *,
    seed: int | None = None,
    manager=None,
    source: str | None = None,
    on_start: Callable[[Path], None] | None = None,
    on_assets: Callable[[list[Asset], Path], None] | None = None,
    progress: Callable[[Any], None] | None = None,
) -> Path:
    """Run a pipeline into a run directory, saving each asset as it finishes; returns the path of run.json.

    The same command on the same directory resumes a killed run: calls already made are read back from their
    files (progress.jsonl says which), the rest are made, and the result is the uninterrupted run's. With no
    seed, a run already in `out` keeps the seed it recorded; a new one draws a fresh seed.
    """
    from .report import write_report

    seed = seed_rule.chosen(recorded_seed(Path(out)) if seed is None else seed)
    resolved_run = resolved(pipeline, values, seed)
    check(pipeline, {**pipeline.inputs, **values})  # the whole plan, before anything is written
    fingerprint = hashlib.sha256(json.dumps(resolved_run, sort_keys=True, default=str).encode()).hexdigest()[:16]
    with locked_dir(out, "workflow run") as out:
        finished = _finished_run(out, fingerprint)
        if finished is not None:
            return finished
        clean_partial(out)
        if on_start:
            on_start(out)
        start = time.perf_counter()
        journal = RunJournal(out, fingerprint, seed, on_assets)
        produced = run_pipeline(pipeline, values, seed=seed, manager=manager, journal=journal, progress=progress)
        steps = [
            {"name": name, "assets": [_asset_record(asset) for asset in assets]} for name, assets in produced.items()
        ]
        run_record = {
            "aigc": __version__,
            "python": platform.python_version(),
            "source": source,
            "fingerprint": fingerprint,
            "pipeline": resolved_run,
            "seconds": round(time.perf_counter() - start, 2),
            "steps": steps,
        }
        run_json = write_json(out / "run.json", run_record)
        write_report(run_record, out / "index.html")
        (out / RunJournal.FILE).unlink(missing_ok=True)
    return run_json


def recorded_seed(out: Path) -> int | None:
    """The seed of the run already in `out` (finished: run.json; unfinished: progress.jsonl), or None."""
    try:
        if (out / "run.json").is_file():
            seed = json.loads((out / "run.json").read_text(encoding="utf-8"))["pipeline"]["seed"]
        else:
            seed = next(iter(read_jsonl(out / RunJournal.FILE)), {}).get("seed")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _finished_run(out: Path, fingerprint: str) -> Path | None:
    """run.json of this very run when it already finished here; an error when another run did."""
    run_json = out / "run.json"
    if not run_json.exists():
        return None
    try:
        done = json.loads(run_json.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        done = None
    if done == fingerprint:
        return run_json
    raise ConfigError(f"{out} already holds a run (run.json); pass a new output directory, so nothing is overwritten.")


def _asset_record(asset: Asset) -> dict[str, Any]:
    text = {"text": asset.data} if asset.kind == "text" else {}
    return {**asset.record(), "file": file_name(asset), **text}


def file_name(asset: Asset) -> str:
    """An asset's file in a run directory: its workflow id and its kind's default format."""
    assert asset.workflow is not None  # a run's assets each carry their WorkflowLink (workflows.py sets it)
    return f"{asset.workflow.id}{formats.default(asset.kind).suffix}"


class RunJournal:
    """progress.jsonl in a run directory: which calls finished, each line written after the call's files.

    A kill costs at most the call in progress; a file that is missing or damaged on resume is made again.
    """

    FILE = "progress.jsonl"

    def __init__(
        self, out: Path, fingerprint: str, seed: int, on_assets: Callable[[list[Asset], Path], None] | None = None
    ) -> None:
        self.out, self.path, self.on_assets = out, out / self.FILE, on_assets
        lines = list(read_jsonl(self.path))
        if lines and lines[0].get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{out} holds another, unfinished run (progress.jsonl); resume it with the same recipe, "
                "inputs and seed, or pass a new output directory."
            )
        if not lines:
            append_jsonl(self.path, [{"fingerprint": fingerprint, "seed": seed}])  # the seed a resume keeps
        self.done = {
            (line["step"], line["call"]): line["files"]
            for line in lines[1:]
            if isinstance(line.get("step"), str)
            and isinstance(line.get("call"), int)
            and isinstance(line.get("files"), list)
        }

    def recall(self, step: str, call: int) -> list[Asset] | None:
        files = self.done.get((step, call))
        if files is None:
            return None
        try:
            assets = [load(self.out / str(name)) for name in files]
        except AIGCError:
            return None
        if self.on_assets:  # a server registers them again (idempotently): a kill may have come in between
            self.on_assets(assets, self.out)
        return assets

    def record(self, step: str, call: int, assets: list[Asset]) -> None:
        files = [asset.save(self.out / file_name(asset)).name for asset in assets]
        append_jsonl(self.path, [{"step": step, "call": call, "files": files}])
        if self.on_assets:
            self.on_assets(assets, self.out)


def replay(
    run_json: str | Path, out: str | Path, *, manager=None, progress: Callable[[Any], None] | None = None
) -> Path:
    """Run again exactly what a run.json recorded (same inputs, steps and seeds)."""
    try:
        record = json.loads(read_text(path_arg(run_json, "run record"), "run record"))
        resolved_run = record["pipeline"]
        schema = RecipeSchema.model_validate({"inputs": resolved_run["inputs"], "steps": resolved_run["steps"]})
        pipeline, values, seed = from_resolved({**resolved_run, "steps": [s.model_dump() for s in schema.steps]})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RecursionError) as error:
        summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot replay {run_json}: not a run.json written by `aigc run` ({summary}).") from None
    return run_to_dir(pipeline, values, out, seed=seed, manager=manager, source=str(run_json), progress=progress)

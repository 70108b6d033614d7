"""YAML pipeline recipes: a schema that points at the line and field that is wrong, and run directories.

A run directory holds every asset (`<step>-<i>.txt|png|wav` with their metadata), `run.json` (the resolved
pipeline, seeds, versions, timings, scores; `aigc run --replay run.json` reproduces the run) and
`index.html`, the chain step by step. A step's knobs are checked against its backend's own declarations
when the file is read, so a bad knob also names its line.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from . import formats, registry
from .assets import __version__
from .errors import AIGCError, ConfigError, one_of
from .storage import write_json
from .workflows import Pipeline, Step, from_resolved, resolved
from .workflows import run as run_pipeline


class StepSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: str
    prompt: str
    backend: str | None = None
    model: str | None = None
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0)
    best_of: int | None = Field(None, ge=1)
    min_score: float | None = Field(None, ge=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)
    input: str | None = None
    split: Literal["paragraphs", "sentences"] | None = None
    join: bool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        known = registry.kinds()  # the registry owns the kinds, plug-ins' included
        if kind not in known:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": one_of(known)})
        return kind


class RecipeSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, str] = Field(default_factory=dict)
    steps: list[StepSchema] = Field(min_length=1)


def load_recipe(path: str | Path) -> Pipeline:
    """Parse and validate a recipe; errors name the file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read recipe {path}: {getattr(error, 'strerror', None) or error}.") from None
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)}).") from None
    try:
        recipe = RecipeSchema.model_validate(data if data is not None else {})
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}:{_line(tree, first['loc'])}: {field}: {first['msg']}.") from None
    steps = [Step(**s.model_dump()) for s in recipe.steps]
    for index, step in enumerate(steps):
        _check_knobs(path, tree, index, step)
    return Pipeline(steps, dict(recipe.inputs))


def _check_knobs(path: Path, tree: Any, index: int, step: Step) -> None:
    """A step's backend and knobs against the backend's own declarations, the error at the knob's line."""
    try:
        spec = registry.get(step.kind, step.backend, step.model)
    except AIGCError as error:
        loc = ("steps", index, "backend" if step.backend else "model")
        raise ConfigError(f"{path}:{_line(tree, loc)}: {'.'.join(map(str, loc))}: {error}") from None
    try:
        spec.load().check_params(step.params)
    except ConfigError as error:
        loc = ("steps", index, "params", *([error.field] if error.field else []))
        raise ConfigError(f"{path}:{_line(tree, loc)}: {'.'.join(map(str, loc))}: {error}") from None


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


def run(recipe: str | os.PathLike, out: str | os.PathLike | None = None, *, seed: int = 0, **inputs: str) -> Any:
    """Run a YAML recipe (`aigc.run("pipelines/story_to_poster.yaml", topic="a city of glass")`).

    Returns step name -> its assets; with `out`, also writes the run directory (assets, run.json, index.html)
    and returns the path of its run.json.
    """
    pipeline = load_recipe(recipe)
    if out is None:
        return run_pipeline(pipeline, inputs, seed=seed)
    return run_to_dir(pipeline, inputs, out, seed=seed, source=str(recipe))


def run_to_dir(pipeline: Pipeline, values: dict[str, str], out: str | Path, *, seed: int = 0, manager=None,
               source: str | None = None) -> Path:
    """Run a pipeline and write its run directory; returns the path of run.json."""
    from .report import write_report

    out = Path(out)
    if (out / "run.json").exists():
        raise ConfigError(f"{out} already holds a run (run.json); pass a new output directory, so nothing is overwritten.")
    start = time.perf_counter()
    produced = run_pipeline(pipeline, values, seed=seed, manager=manager)
    elapsed = time.perf_counter() - start
    steps = []
    for name, assets in produced.items():
        records = []
        for asset in assets:
            file = asset.save(out / f"{asset.workflow.id}{formats.default(asset.kind).suffix}")
            text = {"text": asset.data} if asset.kind == "text" else {}
            records.append({**asset.record(), "file": file.name, **text})
        steps.append({"name": name, "assets": records})
    run_record = {
        "aigc": __version__, "python": platform.python_version(), "source": source,
        "pipeline": resolved(pipeline, values, seed), "seconds": round(elapsed, 2), "steps": steps,
    }
    run_json = write_json(out / "run.json", run_record)
    write_report(run_record, out / "index.html")
    return run_json


def replay(run_json: str | Path, out: str | Path, *, manager=None) -> Path:
    """Run again exactly what a run.json recorded (same inputs, steps and seeds)."""
    try:
        record = json.loads(Path(run_json).read_text(encoding="utf-8"))
        pipeline, values, seed = from_resolved(record["pipeline"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"cannot replay {run_json}: not a run.json written by `aigc run` ({error}).") from None
    return run_to_dir(pipeline, values, out, seed=seed, manager=manager, source=str(run_json))

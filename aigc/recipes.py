"""YAML pipeline recipes: a schema that points at the line and field that is wrong, and run directories.

A run directory holds every asset (`<step>-<i>.txt|png|wav` with their metadata), `run.json` (the resolved
pipeline, seeds, versions, timings, scores; `aigc run --replay run.json` reproduces the run) and
`index.html`, the chain step by step.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .assets import write_atomic
from .errors import ConfigError
from .workflows import Pipeline, Step, from_resolved, resolved, run

SUFFIX = {"text": ".txt", "image": ".png", "audio": ".wav"}


class StepSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Literal["text", "image", "audio"]
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


class RecipeSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, str] = Field(default_factory=dict)
    steps: list[StepSchema] = Field(min_length=1)


def load_recipe(path: str | Path) -> Pipeline:
    """Parse and validate a recipe; errors name the file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read recipe {path}: {error.strerror or error}.") from None
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
    return Pipeline([Step(**s.model_dump()) for s in recipe.steps], dict(recipe.inputs))


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


def run_to_dir(pipeline: Pipeline, values: dict[str, str], out: str | Path, *, seed: int = 0, manager=None,
               source: str | None = None) -> Path:
    """Run a pipeline and write its run directory; returns the path of run.json."""
    from .report import write_report

    out = Path(out)
    if (out / "run.json").exists():
        raise ConfigError(f"{out} already holds a run (run.json); pass a new output directory, so nothing is overwritten.")
    start = time.perf_counter()
    produced = run(pipeline, values, seed=seed, manager=manager)
    elapsed = time.perf_counter() - start
    steps = []
    for name, assets in produced.items():
        records = []
        for asset in assets:
            file = asset.save(out / f"{asset.info['workflow']['id']}{SUFFIX[asset.kind]}")
            text = {"text": asset.data} if asset.kind == "text" else {}
            records.append({**asset.record(), "file": file.name, **text})
        steps.append({"name": name, "assets": records})
    run_record = {
        "aigc": __version__, "python": platform.python_version(), "source": source,
        "pipeline": resolved(pipeline, values, seed), "seconds": round(elapsed, 2), "steps": steps,
    }
    run_json = out / "run.json"
    write_atomic(run_json, (json.dumps(run_record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    write_report(run_record, out / "index.html")
    return run_json


def replay(run_json: str | Path, out: str | Path, *, manager=None) -> Path:
    """Run again exactly what a run.json recorded (same inputs, steps and seeds)."""
    try:
        record = json.loads(Path(run_json).read_text(encoding="utf-8"))
        pipeline, values, seed = from_resolved(record["pipeline"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot replay {run_json}: not a run.json written by `aigc run` ({error}).") from None
    return run_to_dir(pipeline, values, out, seed=seed, manager=manager, source=str(run_json))

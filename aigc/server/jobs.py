"""What a client may POST to /v1/jobs, checked with the same checks as the Python API before it is queued.

Nothing in a request reaches the file system as a path: models are packs, Hub ids or names the server's
operator put under `--models`; input images are earlier assets (`{"asset": id}`) or inline data
(`data:image/png;base64,...`); recipes are names of the server's pipelines or inline YAML; batches carry
their rows.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from .. import registry
from ..errors import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,127}$")


class GenerateJob(BaseModel):
    """Anything aigc.generate takes; knobs go in `params`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["generate"] = "generate"
    kind: StrictStr
    prompt: Union[StrictStr, list[StrictStr]]
    backend: StrictStr | None = None
    model: StrictStr | None = None
    n: StrictInt = 1
    seed: StrictInt | None = None
    best_of: StrictInt | None = None
    min_score: StrictFloat | StrictInt | None = None
    max_attempts: StrictInt | None = None
    diverse: StrictBool = False
    library: StrictBool = False  # judge novelty against the server's team library (and add the chosen to it)
    stream: StrictBool = False  # text: each new piece as a "delta" event (one output)
    params: dict[str, Any] = Field(default_factory=dict)


class RunJob(BaseModel):
    """A workflow: a pipeline of the server's by name, or inline YAML, with its inputs."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["run"]
    recipe: StrictStr | None = None
    yaml: StrictStr | None = None
    inputs: dict[str, StrictStr] = Field(default_factory=dict)
    set: dict[str, StrictStr] = Field(default_factory=dict)  # step.knob=value overrides, as on the command line
    seed: StrictInt | None = None  # None: one is drawn when the job is posted (and kept on resume)


class BatchJob(BaseModel):
    """A batch: rows (prompts, or objects like a JSONL file's lines) x n variants."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["batch"]
    kind: StrictStr
    rows: list[Union[StrictStr, dict[str, Any]]] = Field(min_length=1)
    n: StrictInt = 1
    seed: StrictInt | None = None  # None: one is drawn when the job is posted (and kept on resume)
    backend: StrictStr | None = None
    model: StrictStr | None = None
    best_of: StrictInt | None = None
    min_score: StrictFloat | StrictInt | None = None
    max_attempts: StrictInt | None = None
    params: dict[str, Any] = Field(default_factory=dict)


JobRequest = Annotated[Union[GenerateJob, RunJob, BatchJob], Field(discriminator="type")]


@dataclass
class Places:
    """Where the server finds what requests name: its models and pipelines directories."""

    models: Path | None
    pipelines: Path | None


def model_reference(value: str | None, places: Places, field: str = "model") -> str | None:
    """A request's model as a reference aigc resolves: a pack, a Hub id, or a name under the server's --models."""
    if value is None or value.startswith("pack:") or HUB_ID.match(value):
        return value
    if _NAME.match(value) and places.models is not None and (places.models / value).exists():
        return str(places.models / value)
    raise ConfigError(f"{field}={value!r}: over HTTP a model is 'pack:NAME', a Hub id like 'org/name', or the name of "
                      "a model in the server's --models directory" + (f" ({_listing(places.models)})" if places.models
                                                                       else " (the server has none)") + "; never a path.",
                      field=field)


def recipe_text(job: RunJob, places: Places) -> tuple[str, str]:
    """The YAML of a run job and what to call it in errors: inline, or a pipeline of the server's by name."""
    if (job.recipe is None) == (job.yaml is None):
        raise ConfigError("a run job names one recipe: 'recipe' (a pipeline of the server's) or 'yaml' (inline).",
                          field="recipe")
    if job.yaml is not None:
        return job.yaml, "the inline recipe"
    name = job.recipe.removesuffix(".yaml")
    path = places.pipelines / f"{name}.yaml" if places.pipelines is not None else None
    if not _NAME.match(name) or path is None or not path.is_file():
        known = _listing(places.pipelines, ".yaml") if places.pipelines else "the server has none"
        raise ConfigError(f"recipe={job.recipe!r} is not one of the server's pipelines ({known}).", field="recipe")
    from ..storage import read_text

    return read_text(path, "recipe"), f"{name}.yaml"


def images_resolved(kind: str, backend: str | None, model: str | None, params: dict[str, Any],
                    image_of: Any) -> dict[str, Any]:
    """The request's knobs with its image knob (init_image) turned from `{"asset": id}` or a data URL into a PIL
    image; a path is refused. `image_of(asset_id)` returns the owner's image asset or raises."""
    cls = registry.get(kind, backend, model).load()
    knob = cls.image_input()
    if knob is None or params.get(knob) is None:
        return params
    value = params[knob]
    if isinstance(value, dict) and set(value) == {"asset"} and isinstance(value["asset"], str):
        return {**params, knob: image_of(value["asset"])}
    if isinstance(value, str) and value.startswith("data:image/"):
        return {**params, knob: _decode_data_url(knob, value)}
    raise ConfigError(f"{knob}: over HTTP an input image is {{\"asset\": \"<id of an earlier image>\"}} or a data URL "
                      "(data:image/png;base64,...); never a path.", field=knob)


def _decode_data_url(knob: str, url: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ConfigError(f"{knob}: a data URL with ;base64 data, please.", field=knob)
    try:
        data = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > 8192:
                raise ConfigError(f"{knob} is {image.width}x{image.height}; at most 8192 px a side.", field=knob)
            return image.convert("RGB")
    except (ValueError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ConfigError(f"{knob}: the data URL is not a readable image ({error}).", field=knob) from None


def _listing(directory: Path | None, suffix: str = "") -> str:
    names = sorted(p.name.removesuffix(suffix) for p in directory.iterdir()
                   if not suffix or p.name.endswith(suffix)) if directory and directory.is_dir() else []
    return ", ".join(names[:20]) or "none"

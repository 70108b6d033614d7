"""What a client may POST to /v1/jobs, checked with the same checks as the Python API before it is queued.

Nothing in a request reaches the file system as a path: models are packs, Hub ids (looked up as Hub ids only)
or names the server's operator put under `--models`; input images are earlier assets (`{"asset": id}`) or inline
data (`data:image/png;base64,...`); every other knob that reads files (its Param says so: a GAN prior, an
adapter) names something under `--models`; recipes are names of the server's pipelines or inline YAML; batches
carry their rows. Each is checked wherever a request can carry it: a generate job's params, a batch's params and
rows, a recipe's steps and `set`.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ..errors import AIGCError, ConfigError
from ..orchestration import workflows
from ..runtime import models, registry

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/\w[\w.-]*$")  # org/name, as the Hub spells ids (and never "..")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,127}$")


class GenerateJob(BaseModel):
    """Anything aigc.generate takes; knobs go in `params`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["generate"] = "generate"
    kind: StrictStr
    prompt: StrictStr | list[StrictStr]
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
    rows: list[StrictStr | dict[str, Any]] = Field(min_length=1)
    n: StrictInt = 1
    seed: StrictInt | None = None  # None: one is drawn when the job is posted (and kept on resume)
    backend: StrictStr | None = None
    model: StrictStr | None = None
    best_of: StrictInt | None = None
    min_score: StrictFloat | StrictInt | None = None
    max_attempts: StrictInt | None = None
    params: dict[str, Any] = Field(default_factory=dict)


JobRequest = Annotated[GenerateJob | RunJob | BatchJob, Field(discriminator="type")]


@dataclass
class Places:
    """Where the server finds what requests name: its models and pipelines directories, and the team's library
    (what best_of jobs and scoring requests with library: true read and add to)."""

    models: Path | None
    pipelines: Path | None
    library: Path | None = None


def model_reference(value: str | None, places: Places, field: str = "model") -> str | None:
    """A request's model as a reference aigc resolves: a pack, a Hub id (as `hub:org/name`, which resolves in the
    Hub's cache only, never as a path relative to the server's working directory), or a name under --models."""
    if value is None or value.startswith(models.PACK_PREFIX):
        return value
    if HUB_ID.match(value) and ".." not in value:
        return models.HUB_PREFIX + value
    named = _named(value, places)
    if named is not None:
        return named
    raise ConfigError(
        f"{field}={value!r}: over HTTP a model is 'pack:NAME', a Hub id like 'org/name', or the name of "
        "a model in the server's --models directory" + _models_here(places) + "; never a path.",
        field=field,
    )


def _named(value: Any, places: Places) -> str | None:
    """The path of `value` in the server's --models directory when it is the plain name of something there, else
    None (a path, `..`, `~`, a backslash or a name that is not there alike: nothing outside is looked at)."""
    if isinstance(value, str) and _NAME.match(value) and places.models is not None and (places.models / value).exists():
        return str(places.models / value)
    return None


def recipe_text(job: RunJob, places: Places) -> tuple[str, str]:
    """The YAML of a run job and what to call it in errors: inline, or a pipeline of the server's by name."""
    if (job.recipe is None) == (job.yaml is None):
        raise ConfigError(
            "a run job names one recipe: 'recipe' (a pipeline of the server's) or 'yaml' (inline).", field="recipe"
        )
    if job.yaml is not None:
        return job.yaml, "the inline recipe"
    assert job.recipe is not None  # exactly one of recipe and yaml, checked above
    name = job.recipe.removesuffix(".yaml")
    path = places.pipelines / f"{name}.yaml" if places.pipelines is not None else None
    if not _NAME.match(name) or path is None or not path.is_file():
        known = _listing(places.pipelines, ".yaml") if places.pipelines else "the server has none"
        raise ConfigError(f"recipe={job.recipe!r} is not one of the server's pipelines ({known}).", field="recipe")
    from ..storage import read_text

    return read_text(path, "recipe"), f"{name}.yaml"


ImageSource = Callable[[str], Any] | str  # image_of(asset_id), or why this part of a request takes no image


def files_resolved(
    kind: str,
    backend: str | None,
    model: str | None,
    params: dict[str, Any],
    image_of: ImageSource,
    places: Places,
    *,
    any_backend: bool = False,
) -> dict[str, Any]:
    """The request's knobs with each knob that reads files (`Param.reads_files`) turned into what the backend reads:
    an input image from `{"asset": id}` (`image_of(asset_id)` returns the owner's image asset or raises) or a data
    URL into a PIL image; any other (a GAN prior, an adapter) from a name in the server's --models into its path.
    Anything else, a path above all, is refused in the same words whether or not it exists. Unknown knobs are left
    for the backend's own check to name. `any_backend`: the knobs may go to any backend of the kind (a batch's
    params with neither backend nor model, which each row may choose), so every backend's Params are read."""
    declared = (
        _file_knobs(kind)
        if any_backend and backend is None and model is None
        else registry.get(kind, backend, model).load().params
    )
    resolved = dict(params)
    for name, value in params.items():
        param = declared.get(name)
        if param is None or not param.reads_files or value is None or value in param.words:
            continue
        if param.type == "controls":
            resolved[name] = _controls(name, value, image_of, places)
        else:
            resolved[name] = input_image(name, value, image_of) if param.type == "image" else _file(name, value, places)
    return resolved


def _controls(knob: str, value: Any, image_of: ImageSource, places: Places) -> Any:
    """ControlNet entries with each model resolved as a request's model is and each image as an input image is;
    anything not shaped like entries is left for the knob's own check to name."""
    entries = [value] if isinstance(value, dict) else value
    if not isinstance(entries, list):
        return value
    resolved = []
    for index, entry in enumerate(entries):
        if isinstance(entry, dict):
            where = f"{knob}[{index}]"
            entry = dict(entry)
            for field in ("model", "annotator"):  # the ControlNet, and a depth preprocessor's model
                if isinstance(entry.get(field), str):
                    entry[field] = model_reference(entry[field], places, field=f"{where}.{field}")
            if entry.get("image") is not None:
                entry["image"] = input_image(f"{where}.image", entry["image"], image_of)
        resolved.append(entry)
    return resolved


def _file_knobs(kind: str) -> dict[str, Any]:
    """The knobs that read files in any backend of `kind`, by name (the first backend's Param where several say so)."""
    declared: dict[str, Any] = {}
    for name, pairs in registry.knobs().items():
        reading = [param for spec, param in pairs if spec.kind == kind and param.reads_files]
        if reading:
            declared[name] = reading[0]
    return declared


def input_image(knob: str, value: Any, image_of: ImageSource) -> Any:
    """An input image a request names: {"asset": id} (`image_of` reads it) or a data URL, bounded; a list of them
    for a knob that takes several; a recipe step's {"step": NAME} left for the run."""
    if isinstance(value, list):  # a knob that takes several images (image_prompt): each as one is taken
        return [input_image(f"{knob}[{index}]", item, image_of) for index, item in enumerate(value)]
    if image_of is STEP_IMAGE and workflows.step_reference(value) is not None:
        return value  # an earlier step's image, {"step": NAME}: the run itself puts it in
    if isinstance(image_of, str):
        raise ConfigError(f"{knob}: {image_of}", field=knob)
    if isinstance(value, dict) and set(value) == {"asset"} and isinstance(value["asset"], str):
        return image_of(value["asset"])
    if isinstance(value, str) and value.startswith("data:image/"):
        return _decode_data_url(knob, value)
    raise ConfigError(
        f'{knob}: over HTTP an input image is {{"asset": "<id of an earlier image>"}} or a data URL '
        "(data:image/png;base64,...); never a path.",
        field=knob,
    )


def _file(knob: str, value: Any, places: Places) -> str:
    path = _named(value, places)
    if path is None:
        raise ConfigError(
            f"{knob}={value!r:.80}: over HTTP a knob that reads a file takes the name of one in the "
            "server's --models directory" + _models_here(places) + "; never a path.",
            field=knob,
        )
    return path


ROW_IMAGE = (
    'over HTTP a batch row takes no input image of its own; put it in the batch\'s params ({"asset": id} or '
    "a data URL), where every row shares it, or send a generate job."
)
STEP_IMAGE = (
    "over HTTP a recipe step takes its images from earlier image steps (input: STEP, or {step: STEP} for a mask "
    "or a control image), never a file; "
    'to start from an image you have, send a generate job with {"asset": id} or a data URL.'
)


def row_resolved(
    fields: dict[str, Any], number: int, kind: str, backend: str | None, model: str | None, places: Places
) -> dict[str, Any]:
    """A batch row (an object) with its model and its file knobs resolved as a generate job's are (its input image
    refused). A row whose backend or model is wrong is left as it is: it fails on its own when the batch is planned,
    as locally, before any of its knobs is looked at."""
    from ..orchestration.batch import ROW_KEYS

    where = f"rows.{number}"
    fields = dict(fields)
    if isinstance(fields.get("model"), str):
        fields["model"] = model_reference(fields["model"], places, field=f"{where}.model")
    try:
        registry.get(kind, fields.get("backend", backend), fields.get("model", model))
    except AIGCError:
        return fields
    try:
        knobs = files_resolved(
            kind,
            fields.get("backend", backend),
            fields.get("model", model),
            {k: v for k, v in fields.items() if k not in ROW_KEYS},
            ROW_IMAGE,
            places,
        )
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}", field=f"{where}.{error.field}" if error.field else where) from None
    return {**fields, **knobs}


def run_pipeline(request: RunJob, places: Places) -> tuple[Any, dict[str, str], str]:
    """A run job's pipeline as the server runs it, its inputs, and what to call its recipe: each step's model and
    file knobs resolved as a generate job's are, those in the YAML and those a `set` gives alike (an input image
    refused: a step takes an earlier step's)."""
    from ..orchestration.recipes import override, parse_recipe

    def files_of(step: Any, params: dict[str, Any]) -> dict[str, Any]:
        try:
            registry.get(step.kind, step.backend, step.model)
        except AIGCError:
            return params  # the step's own check names its backend or model, at its line
        return files_resolved(step.kind, step.backend, step.model, params, STEP_IMAGE, places)

    text, where = recipe_text(request, places)
    pipeline = parse_recipe(
        text,
        where,
        lambda value, field: model_reference(value, places, field),
        lambda step: files_of(step, step.params),
    )
    values = {**request.inputs, **override(pipeline, dict(request.set))}
    steps = {step.name: step for step in pipeline.steps}
    for key in request.set:
        name, dot, knob = key.partition(".")
        if dot:  # override() refused a step that is not there already
            step, knob = steps[name], knob.replace("-", "_")
            try:
                step.params[knob] = files_of(step, {knob: step.params[knob]})[knob]
            except ConfigError as error:
                raise ConfigError(f"set {key}: {error}", field="set") from None
    return pipeline, values, where


def _decode_data_url(knob: str, url: str) -> Any:
    """The image a data URL holds, as RGB; its size is checked from its header (the megapixels limit for images
    read, and 8192 px a side) before its pixels are decoded, and Pillow's decompression-bomb guard stays on."""
    from PIL import Image, UnidentifiedImageError

    from .. import limits

    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ConfigError(f"{knob}: a data URL with ;base64 data, please.", field=knob)
    try:
        data = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            limits.check_image(image.width, image.height, knob, field=knob)
            if max(image.size) > 8192:
                raise ConfigError(f"{knob} is {image.width}x{image.height}; at most 8192 px a side.", field=knob)
            return image.convert("RGB")
    except ConfigError:
        raise
    except (ValueError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ConfigError(f"{knob}: the data URL is not a readable image ({error}).", field=knob) from None


def _models_here(places: Places) -> str:
    """What an error naming the --models directory adds: the names it holds, or that there is none."""
    return f" ({_listing(places.models)})" if places.models else " (the server has none)"


def _listing(directory: Path | None, suffix: str = "") -> str:
    names = (
        sorted(p.name.removesuffix(suffix) for p in directory.iterdir() if not suffix or p.name.endswith(suffix))
        if directory and directory.is_dir()
        else []
    )
    return ", ".join(names[:20]) or "none"

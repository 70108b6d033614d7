"""A job request checked the way the Python API checks it, before anything is queued (nothing loads): what
is stored (with a fresh seed fixed, so a resumed job makes the same assets), its kind, and how many assets
it will make."""

from __future__ import annotations

from typing import Any

from .. import api, seeds
from ..errors import ConfigError
from .jobs import BatchJob, GenerateJob, Places, RunJob, images_resolved, model_reference, recipe_text
from .store import Store


def validated(request: GenerateJob | RunJob | BatchJob, places: Places, manager: Any, store: Store,
              owner: str | None) -> tuple[dict[str, Any], str | None, int]:
    check = {"generate": _generate, "run": _run, "batch": _batch}[request.type]
    if request.seed is None:  # the one seed rule: none given, a fresh one, fixed now so a resumed job keeps it
        request = request.model_copy(update={"seed": seeds.fresh()})
    return check(request, places, manager, store, owner)


def _generate(request: GenerateJob, places: Places, manager: Any, store: Store, owner: str | None):
    from .runner import owned_image

    model = model_reference(request.model, places)
    params = images_resolved(request.kind, request.backend, model, request.params,
                             lambda asset_id: owned_image(store, store.path.parent, owner, asset_id))
    prepared = api.prepare(request.kind, request.prompt, backend=request.backend, model=model, n=request.n,
                           seed=request.seed, best_of=request.best_of, min_score=request.min_score,
                           max_attempts=request.max_attempts, diverse=request.diverse, manager=manager, **params)
    return request.model_dump(), request.kind, len(prepared.prompts) * request.n


def _run(request: RunJob, places: Places, manager: Any, store: Store, owner: str | None):
    from ..recipes import override, parse_recipe
    from ..workflows import check, planned_outputs

    text, where = recipe_text(request, places)
    # over HTTP a step's model is a reference the server resolves, never a path
    pipeline = parse_recipe(text, where, lambda value, field: model_reference(value, places, field))
    values = {**request.inputs, **override(pipeline, dict(request.set))}
    seeds.check(request.seed)
    order = check(pipeline, {**pipeline.inputs, **values})
    return request.model_dump(), None, sum(planned_outputs(pipeline, order).values())


def _batch(request: BatchJob, places: Places, manager: Any, store: Store, owner: str | None):
    from ..batch import Row, plan
    from ..batch_runner import check_batch_wide

    model = model_reference(request.model, places)
    loop = {k: v for k, v in {"best_of": request.best_of, "min_score": request.min_score,
                              "max_attempts": request.max_attempts}.items() if v is not None}
    check_batch_wide(request.kind, request.n, request.backend, model, request.params, loop)
    rows = [Row(i, r if isinstance(r, dict) else {"prompt": r}) for i, r in enumerate(request.rows, 1)]
    for row in rows:
        if row.fields and isinstance(row.fields.get("model"), str):
            model_reference(row.fields["model"], places, field=f"rows.{row.number}.model")
    jobs, failures = plan(rows, kind=request.kind, n=request.n, seed=request.seed, backend=request.backend,
                          model=model, params=request.params, loop=loop)
    if not jobs:  # name a real row's reason: an empty object is a placeholder keeping a client file's numbering
        first = next((f for f in failures if rows[f["row"] - 1].fields), failures[0])
        raise ConfigError(f"rows.{first['row']}: {first['reason']}", field=f"rows.{first['row']}")
    return request.model_dump(), request.kind, len(jobs)

"""A job request checked the way the Python API checks it, before anything is queued (nothing loads): what
is stored (with a fresh seed fixed, so a resumed job makes the same assets), its kind, and how many assets
it will make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import api, seeds
from ..errors import ConfigError
from .jobs import BatchJob, GenerateJob, Places, RunJob, files_resolved, model_reference, row_resolved, run_pipeline
from .store import Store

Checked = tuple[dict[str, Any], str | None, int]  # what is stored, the kind (None: a run's steps) and the assets


def validated(
    request: GenerateJob | RunJob | BatchJob, places: Places, manager: Any, store: Store, owner: str | None
) -> Checked:
    checks: dict[str, Callable[..., Checked]] = {"generate": _generate, "run": _run, "batch": _batch}
    check = checks[request.type]
    if request.seed is None:  # the one seed rule: none given, a fresh one, fixed now so a resumed job keeps it
        request = request.model_copy(update={"seed": seeds.fresh()})
    return check(request, places, manager, store, owner)


def _generate(request: GenerateJob, places: Places, manager: Any, store: Store, owner: str | None) -> Checked:
    from .runner import owned_image

    model = model_reference(request.model, places)
    params = files_resolved(
        request.kind,
        request.backend,
        model,
        request.params,
        lambda asset_id: owned_image(store, store.path.parent, owner, asset_id),
        places,
    )
    prepared = api.prepare(
        request.kind,
        request.prompt,
        backend=request.backend,
        model=model,
        n=request.n,
        seed=request.seed,
        best_of=request.best_of,
        min_score=request.min_score,
        max_attempts=request.max_attempts,
        diverse=request.diverse,
        manager=manager,
        **params,
    )
    return request.model_dump(), request.kind, len(prepared.prompts) * request.n


def _run(request: RunJob, places: Places, manager: Any, store: Store, owner: str | None) -> Checked:
    from ..orchestration.workflows import check, planned_outputs

    pipeline, values, _ = run_pipeline(request, places)  # a step's model and file knobs: what the server resolves
    seeds.check(request.seed)
    order = check(pipeline, {**pipeline.inputs, **values})
    return request.model_dump(), None, sum(planned_outputs(pipeline, order).values())


def _batch(request: BatchJob, places: Places, manager: Any, store: Store, owner: str | None) -> Checked:
    from ..orchestration.batch import Row, check_size, plan
    from ..orchestration.batch_runner import check_batch_wide
    from .runner import owned_image

    model = model_reference(request.model, places)
    loop = {
        k: v
        for k, v in {
            "best_of": request.best_of,
            "min_score": request.min_score,
            "max_attempts": request.max_attempts,
        }.items()
        if v is not None
    }
    params = files_resolved(
        request.kind,
        request.backend,
        model,
        request.params,
        lambda asset_id: owned_image(store, store.path.parent, owner, asset_id),
        places,
        any_backend=True,
    )
    check_batch_wide(request.kind, request.n, request.backend, model, params, loop)
    check_size(request.rows, request.n, "this batch request")  # counted before any row is resolved or planned
    rows = [
        Row(
            i,
            row_resolved(r, i, request.kind, request.backend, model, places) if isinstance(r, dict) else {"prompt": r},
        )
        for i, r in enumerate(request.rows, 1)
    ]
    assert request.seed is not None  # validated() fixed a fresh one
    jobs, failures = plan(
        rows,
        kind=request.kind,
        n=request.n,
        seed=request.seed,
        backend=request.backend,
        model=model,
        params=params,
        loop=loop,
    )
    if not jobs:  # name a real row's reason: an empty object is a placeholder keeping a client file's numbering
        first = next((f for f in failures if rows[f["row"] - 1].fields), failures[0])
        raise ConfigError(f"rows.{first['row']}: {first['reason']}", field=f"rows.{first['row']}")
    return request.model_dump(), request.kind, len(jobs)

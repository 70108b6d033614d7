"""The worker: takes the next job from the store and runs it through aigc's own API (generate, a workflow
run, a batch), recording each finished asset as it lands, so a killed server resumes where it stopped.

A generate job is cut into calls of a few outputs each (every output has its own seed, so the cut never
changes an output); each call's assets are written atomically, then recorded with the job's progress in
one transaction. Workflow runs and batches resume through their own journals (progress.jsonl, manifest.jsonl).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .. import api, formats
from ..assets import Asset
from ..errors import AIGCError
from ..records import Progress
from ..scoring.loop import prompt_seed
from .jobs import BatchJob, GenerateJob, Places, RunJob, images_resolved, model_reference, recipe_text
from .store import AssetRow, Job, Store

log = logging.getLogger("aigc.server")
CALL_OUTPUTS = 8  # outputs per generate call of a job: small enough that a kill loses little
PROGRESS_EVERY_S = 0.25  # progress events per job, at most this often


class Cancelled(Exception):
    """Raised inside a job's work when its owner cancelled it."""


class Runner:
    """One thread, one device manager: jobs run one at a time, each call batched on the device."""

    def __init__(self, store: Store, data: Path, manager: Any, places: Places,
                 on_seconds: Callable[[str, float], None] | None = None) -> None:
        self.store, self.data, self.manager, self.places = store, data, manager, places
        self.on_seconds = on_seconds
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aigc-runner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def nudge(self) -> None:
        """A job was queued: look now rather than at the next tick."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self.store.claim()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.execute(job)

    def execute(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            {"generate": self._generate, "run": self._run, "batch": self._batch}[job.type](job)
            self.store.finish(job, "cancelled" if self.store.cancelled(job.id) else "done")
        except Cancelled:
            self.store.finish(job, "cancelled")
        except AIGCError as error:
            self.store.finish(job, "failed", {"type": type(error).__name__, "message": str(error),
                                              "field": getattr(error, "field", None)})
        except Exception as error:  # noqa: BLE001 - a bug must fail its job, never the server
            log.error("job %s failed unexpectedly:\n%s", job.id, traceback.format_exc())
            self.store.finish(job, "failed", {"type": "InternalError", "message": f"{type(error).__name__}: {error}"})
        finally:
            if self.on_seconds:
                self.on_seconds(job.type, time.perf_counter() - start)

    # --- the three kinds of job -----------------------------------------------------------------------------
    def _generate(self, job: Job) -> None:
        request = GenerateJob(**job.request)
        done = self.store.positions(job.id)
        for positions, call in generate_calls(request, self.places, self._image_of(job)):
            if set(positions) <= done:
                continue
            self._check_cancel(job)
            assets = api.generate(manager=self.manager, progress=self._reporter(job), **call)
            rows = [self._save(job, position, asset) for position, asset in zip(positions, assets)]
            done |= set(positions)
            self.store.add_assets(job, rows, {"stage": "assets", "step": len(done), "total": job.expected})

    def _run(self, job: Job) -> None:
        from ..recipes import override, parse_recipe, run_to_dir

        request = RunJob(**job.request)
        text, where = recipe_text(request, self.places)
        pipeline = parse_recipe(text, where, lambda value, field: model_reference(value, self.places, field))
        values = {**request.inputs, **override(pipeline, dict(request.set))}
        order = {step.name: index for index, step in enumerate(pipeline.steps)}

        def register(assets: list[Asset], out: Path) -> None:
            rows = []
            for asset in assets:
                step, _, number = asset.workflow.id.rpartition("-")
                path = out / f"{asset.workflow.id}{formats.default(asset.kind).suffix}"
                rows.append(self._row(job, order[step] * 10**7 + int(number), asset, path))
            self._check_cancel(job)
            self.store.add_assets(job, rows, {"stage": "assets", "step": len(self.store.positions(job.id)) + len(rows),
                                              "total": job.expected})

        run_to_dir(pipeline, values, self._job_dir(job) / "run", seed=request.seed, manager=self.manager,
                   source=where, on_assets=register, progress=self._reporter(job))

    def _batch(self, job: Job) -> None:
        from ..batch_runner import batch
        from ..storage import write_atomic

        request = BatchJob(**job.request)
        directory = self._job_dir(job)
        rows = "".join(__import__("json").dumps(r if isinstance(r, dict) else {"prompt": r}) + "\n"
                       for r in request.rows)
        write_atomic(directory / "prompts.jsonl", rows.encode("utf-8"))

        def register(planned: Any, asset: Asset, path: Path) -> None:
            self._check_cancel(job)
            row = self._row(job, planned.row * 10**5 + planned.variant, asset, path)
            self.store.add_assets(job, [row], {"stage": "assets", "step": len(self.store.positions(job.id)) + 1,
                                               "total": job.expected})

        summary = batch(directory / "prompts.jsonl", directory / "batch", kind=request.kind, n=request.n,
                        seed=request.seed, backend=request.backend,
                        model=model_reference(request.model, self.places), best_of=request.best_of,
                        min_score=request.min_score, max_attempts=request.max_attempts, manager=self.manager,
                        on_asset=register, **request.params)
        if summary.nothing_made:
            raise BatchFailed(summary.failed)

    # --- helpers ----------------------------------------------------------------------------------------------
    def _save(self, job: Job, position: int, asset: Asset) -> AssetRow:
        path = self._job_dir(job, "assets") / f"{position:06d}{formats.default(asset.kind).suffix}"
        asset.save(path)
        return self._row(job, position, asset, path)

    def _row(self, job: Job, position: int, asset: Asset, path: Path) -> AssetRow:
        data = path.read_bytes()
        return AssetRow(secrets.token_hex(12), job.id, position, asset.kind, str(path.relative_to(self.data)),
                        formats.for_path(path).media_type, len(data), hashlib.sha256(data).hexdigest()[:24],
                        asset.record())

    def _job_dir(self, job: Job, area: str = "jobs") -> Path:
        path = self.data / area / job.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _image_of(self, job: Job) -> Callable[[str], Any]:
        def image_of(asset_id: str) -> Any:
            return owned_image(self.store, self.data, job.owner, asset_id)

        return image_of

    def _check_cancel(self, job: Job) -> None:
        if self.store.cancelled(job.id):
            raise Cancelled

    def _reporter(self, job: Job) -> Callable[[Progress], None]:
        """A progress callback for aigc's API: at most a few events a second, and the place a cancel lands."""
        last = [0.0]

        def report(progress: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or progress.step == progress.total:
                last[0] = now
                self._check_cancel(job)
                self.store.progress(job, {"stage": progress.stage, "step": progress.step, "total": progress.total})

        return report


class BatchFailed(AIGCError):
    """Every row of a batch job failed."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        first = failures[0]["reason"] if failures else "no rows"
        super().__init__(f"every row failed ({len(failures)}); the first: {first}")


def generate_calls(request: GenerateJob, places: Places,
                   image_of: Callable[[str], Any]) -> list[tuple[list[int], dict[str, Any]]]:
    """A generate job as (asset positions, aigc.generate keywords) calls, the same on every run of the job.

    Without the scorer's loop: CALL_OUTPUTS outputs per call, output j with seed + j (as one local call gives).
    With it: one call per prompt, prompt i searching from prompt_seed(seed, i) (as one local call does).
    """
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    model = model_reference(request.model, places)
    params = images_resolved(request.kind, request.backend, model, request.params, image_of)
    common = {"kind": request.kind, "backend": request.backend, "model": model, **params}
    seed = request.seed if request.seed is not None else 0
    if request.best_of is None and request.min_score is None:
        outputs = [(p, seed + j) for j, p in enumerate(q for q in prompts for _ in range(request.n))]
        return [(list(range(start, start + len(chunk))), {**common, "prompt": [p for p, _ in chunk],
                                                           "seed": [s for _, s in chunk]})
                for start in range(0, len(outputs), CALL_OUTPUTS)
                for chunk in [outputs[start:start + CALL_OUTPUTS]]]
    loop = {"n": request.n, "best_of": request.best_of, "min_score": request.min_score,
            "max_attempts": request.max_attempts, "diverse": request.diverse}
    library = places_library(places) if request.library else None
    return [(list(range(i * request.n, (i + 1) * request.n)),
             {**common, **loop, "prompt": prompt, "seed": prompt_seed(seed, i), "library": library})
            for i, prompt in enumerate(prompts)]


def places_library(places: Places) -> Any:
    return getattr(places, "library", None)


def owned_image(store: Store, data: Path, owner: str | None, asset_id: str) -> Any:
    """An image asset the owner may use as an input (admins: any), opened from the server's own files."""
    from ..assets import load
    from ..errors import ConfigError

    row = store.asset(asset_id)
    job = store.get(row.job) if row else None
    if row is None or row.kind != "image" or (owner is not None and job is not None and job.owner != owner):
        raise ConfigError(f"no image asset {asset_id!r} of yours to use as the input image.", field="init_image")
    return load(data / row.path).data

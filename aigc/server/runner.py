"""The worker: takes the next job from the store and runs it through aigc's own API (generate, a workflow
run, a batch), recording each finished asset as it lands, so a killed server resumes where it stopped.

A generate job is cut into calls of a few outputs each (every output has its own seed, so the cut never
changes an output); each call's assets are written atomically, then recorded with the job's progress in
one transaction. Workflow runs and batches resume through their own journals (progress.jsonl, manifest.jsonl).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AIGCError
from ..media import formats
from ..media.assets import Asset
from ..records import Progress
from ..runtime import registry
from ..scoring.loop import prompt_seed
from ..seeds import expand
from .candidates import recorder_for
from .engines import LocalExecutor
from .jobs import BatchJob, GenerateJob, Places, RunJob, files_resolved, model_reference, row_resolved, run_pipeline
from .store import AssetRow, Job, Store

log = logging.getLogger("aigc.server")
PROGRESS_EVERY_S = 0.25  # progress events per job, at most this often
# a mergeable job waits for companions in steps of MERGE_WAIT_S while each step brings more (clients' requests
# come in bursts), at most MERGE_WINDOW_S in all: a quiet server adds one step to a job, a busy one fills its calls
MERGE_WAIT_S, MERGE_WINDOW_S = 0.03, 0.3
OUTPUTS_PER_CALL = 16  # a job on its own is made in calls of this many outputs (merged calls: --merge-outputs)


class Cancelled(Exception):
    """Raised inside a job's work when its owner cancelled it."""


class Runner:
    """One worker thread: jobs run one at a time (or several together, merged into shared batched calls), each
    call through `executor` (aigc's API on the server's device manager, or a Ray actor)."""

    def __init__(
        self,
        store: Store,
        data: Path,
        manager: Any,
        places: Places,
        *,
        executor: Any = None,
        name: str = "runner",
        merge_outputs: int = 16,
        on_seconds: Callable[[str, float], None] | None = None,
        private: bool = False,
    ) -> None:
        self.store, self.data, self.manager, self.places = store, data, manager, places
        self.private = private  # --private: a job takes only its owner's images as inputs
        self.executor = executor or LocalExecutor(manager)
        self.name, self.merge_outputs, self.on_seconds = name, merge_outputs, on_seconds
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"aigc-{name}", daemon=True)

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
            job = self.store.claim(self.name)
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if job.merge_key is not None and self.merge_outputs > 1:
                self.execute_merged(job)
            else:
                self.execute(job)

    def execute(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            {"generate": self._generate, "run": self._run, "batch": self._batch}[job.type](job)
            self.store.finish(job, "cancelled" if self.store.cancelled(job.id) else "done")
        except Cancelled:
            self.store.finish(job, "cancelled")
        except AIGCError as error:
            self.store.finish(
                job,
                "failed",
                {"type": type(error).__name__, "message": str(error), "field": getattr(error, "field", None)},
            )
        except Exception as error:  # noqa: BLE001 - a bug must fail its job, never the server
            log.error("job %s failed unexpectedly:\n%s", job.id, traceback.format_exc())
            self.store.finish(job, "failed", {"type": "InternalError", "message": f"{type(error).__name__}: {error}"})
        finally:
            if self.on_seconds:
                self.on_seconds(job.type, time.perf_counter() - start)

    # --- the kinds of job -----------------------------------------------------------------------------------
    def _generate(self, job: Job) -> None:
        request = GenerateJob(**job.request)
        done = self.store.positions(job.id)
        extra: dict[str, Any] = {"streamer": self._streamer(job)} if request.stream else {}
        recorder = recorder_for(request, self.executor, self.manager)
        if recorder is not None:
            extra["scorer"] = recorder
        for positions, call in generate_calls(request, self.places, self._image_of(job), OUTPUTS_PER_CALL):
            if set(positions) <= done:
                continue
            self._check_cancel(job)
            assets = self.executor.generate(progress=self._reporter(job), **call, **extra)
            rows = [self._save(job, position, asset) for position, asset in zip(positions, assets, strict=True)]
            done |= set(positions)
            progress = {"stage": "assets", "step": len(done), "total": job.expected}
            if recorder is not None:  # every candidate judged, with its scores and whether it was kept
                progress["candidates"] = recorder.close_call(assets, positions)
            self.store.add_assets(job, rows, progress)

    def _run(self, job: Job) -> None:
        from ..orchestration.recipes import run_to_dir

        request = RunJob(**job.request)
        pipeline, values, where = run_pipeline(request, self.places)
        order = {step.name: index for index, step in enumerate(pipeline.steps)}

        def register(assets: list[Asset], out: Path) -> None:
            rows = []
            for asset in assets:
                assert asset.workflow is not None  # a run's assets each carry their WorkflowLink
                step, _, number = asset.workflow.id.rpartition("-")
                path = out / f"{asset.workflow.id}{formats.default(asset.kind).suffix}"
                rows.append(self._row(job, order[step] * 10**7 + int(number), asset, path))
            self._check_cancel(job)
            self.store.add_assets(
                job,
                rows,
                {"stage": "assets", "step": len(self.store.positions(job.id)) + len(rows), "total": job.expected},
            )

        run_to_dir(
            pipeline,
            values,
            output_dir(self.data, job),
            seed=request.seed,
            manager=self.manager,
            source=where,
            on_assets=register,
            progress=self._reporter(job),
        )

    def _batch(self, job: Job) -> None:
        from ..orchestration.batch_runner import batch
        from ..storage import write_atomic

        request = BatchJob(**job.request)
        directory = self._job_dir(job)
        model = model_reference(request.model, self.places)
        params = files_resolved(
            request.kind, request.backend, model, request.params, self._image_of(job), self.places, any_backend=True
        )
        rows = "".join(
            json.dumps(
                row_resolved(r, i, request.kind, request.backend, model, self.places)
                if isinstance(r, dict)
                else {"prompt": r}
            )
            + "\n"
            for i, r in enumerate(request.rows, 1)
        )
        write_atomic(directory / "prompts.jsonl", rows.encode("utf-8"))

        def register(planned: Any, asset: Asset, path: Path) -> None:
            self._check_cancel(job)
            row = self._row(job, planned.row * 10**5 + planned.variant, asset, path)
            self.store.add_assets(
                job, [row], {"stage": "assets", "step": len(self.store.positions(job.id)) + 1, "total": job.expected}
            )

        summary = batch(
            directory / "prompts.jsonl",
            output_dir(self.data, job),
            kind=request.kind,
            n=request.n,
            seed=request.seed,
            backend=request.backend,
            model=model,
            best_of=request.best_of,
            min_score=request.min_score,
            max_attempts=request.max_attempts,
            manager=self.manager,
            on_asset=register,
            progress=self._reporter(job),
            **params,
        )
        if summary.nothing_made:
            raise BatchFailed(summary.failed)

    def execute_merged(self, first: Job) -> None:
        """`first` and the pending jobs that share its merge key, their outputs generated together in calls of up
        to merge_outputs: every output keeps its own seed, so each job gets exactly what it would alone."""
        group = self._companions(first)
        self.store.record_merge(group)
        try:
            self._generate_together(group)
        except Cancelled:
            pass  # every job in the call was cancelled: each finishes so below
        except Exception as error:  # noqa: BLE001 - what is missing is made job by job below: an error lands on its job
            log.warning(
                "merged call of %d jobs stopped (%s: %s); finishing them one by one",
                len(group),
                type(error).__name__,
                error,
            )
        for job in group:
            self.execute(job)  # makes only what the merged calls did not (nothing, usually), then finishes the job

    def _companions(self, first: Job) -> list[Job]:
        """`first` and the compatible jobs waiting or arriving within the merge window, up to merge_outputs."""
        group, waited = [first], 0.0
        room = self.merge_outputs - (first.expected - len(self.store.positions(first.id)))
        while room > 0:
            more = self.store.claim_compatible(first, room, self.name)
            group += more
            room -= sum(job.expected - len(self.store.positions(job.id)) for job in more)
            if (waited and not more) or waited >= MERGE_WINDOW_S or room <= 0:
                break
            time.sleep(MERGE_WAIT_S)
            waited += MERGE_WAIT_S
        return group

    def _generate_together(self, group: list[Job]) -> None:
        outputs: list[tuple[Job, Unit]] = []
        common: dict[str, Any] = {}
        for job in group:
            common, units = generate_outputs(GenerateJob(**job.request), self.places, self._image_of(job))
            done = self.store.positions(job.id)
            outputs += [(job, unit) for unit in units if unit.position not in done]
        while outputs:
            chunk = [o for o in outputs[: self.merge_outputs] if not self.store.cancelled(o[0].id)]
            outputs = outputs[self.merge_outputs :]
            if not chunk:
                continue
            jobs = list({job.id: job for job, _ in chunk}.values())
            own = {name: [unit.own[name] for _, unit in chunk] for name in chunk[0][1].own}
            assets = self.executor.generate(
                progress=self._reporter(*jobs),
                **common,
                **own,
                prompt=[unit.prompt for _, unit in chunk],
                seed=[unit.seed for _, unit in chunk],
            )
            for job in jobs:
                rows = [
                    self._save(job, unit.position, asset)
                    for (owner, unit), asset in zip(chunk, assets, strict=True)
                    if owner is job
                ]
                total = len(self.store.positions(job.id)) + len(rows)
                self.store.add_assets(
                    job,
                    rows,
                    {
                        "stage": "assets",
                        "step": total,
                        "total": job.expected,
                        "batched_with": len(jobs),
                        "call_outputs": len(chunk),
                    },
                )

    # --- helpers ----------------------------------------------------------------------------------------------
    def _save(self, job: Job, position: int, asset: Asset) -> AssetRow:
        path = self._job_dir(job, "assets") / f"{position:06d}{formats.default(asset.kind).suffix}"
        asset.save(path)
        return self._row(job, position, asset, path)

    def _row(self, job: Job, position: int, asset: Asset, path: Path) -> AssetRow:
        data = path.read_bytes()
        return AssetRow(
            secrets.token_hex(12),
            job.id,
            position,
            asset.kind,
            str(path.relative_to(self.data)),
            formats.for_path(path).media_type,
            len(data),
            hashlib.sha256(data).hexdigest()[:24],
            asset.record(),
        )

    def _job_dir(self, job: Job, area: str = "jobs") -> Path:
        path = self.data / area / job.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _image_of(self, job: Job) -> Callable[[str], Any]:
        def image_of(asset_id: str) -> Any:
            return owned_image(self.store, self.data, job.owner if self.private else None, asset_id)

        return image_of

    def _streamer(self, job: Job) -> Callable[[str], None]:
        """Each new piece of a streamed text as a "delta" event (what the OpenAI layer streams on)."""

        def stream(piece: str) -> None:
            self.store.emit(job, "delta", {"text": piece})

        return stream

    def _check_cancel(self, job: Job) -> None:
        if self.store.cancelled(job.id):
            raise Cancelled

    def _reporter(self, *jobs: Job) -> Callable[[Progress], None]:
        """A progress callback for aigc's API: at most a few events a second to each job, and the place a cancel
        lands (a call shared by several jobs stops once all of them are cancelled)."""
        last = [0.0]

        def report(progress: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or progress.step == progress.total:
                last[0] = now
                if all(self.store.cancelled(job.id) for job in jobs):
                    raise Cancelled
                detail = {"detail": progress.detail} if progress.detail else {}  # the model loading, a workflow's step
                for job in jobs:
                    self.store.progress(
                        job, {"stage": progress.stage, "step": progress.step, "total": progress.total, **detail}
                    )

        return report


OUTPUTS = {"run": "run", "batch": "batch"}  # the directory a run or batch job writes, under DATA/jobs/<job id>/


def output_dir(data: Path, job: Job) -> Path:
    """Where a run or batch job writes its run directory or batch directory (what clients mirror)."""
    return data / "jobs" / job.id / OUTPUTS[job.type]


class BatchFailed(AIGCError):
    """Every row of a batch job failed."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        first = failures[0]["reason"] if failures else "no rows"
        super().__init__(f"every row failed ({len(failures)}); the first: {first}")


@dataclass
class Unit:
    """One output of a generate job: where it goes, its prompt and seed, and the knobs it owns (a chat)."""

    position: int
    prompt: str
    seed: int
    own: dict[str, Any]


def generate_outputs(
    request: GenerateJob, places: Places, image_of: Callable[[str], Any]
) -> tuple[dict[str, Any], list[Unit]]:
    """A generate job without the scorer's loop as its shared keywords and its outputs, with the seeds one local
    call gives them; knobs an output owns (per_output) are left out of the shared ones."""
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    model = model_reference(request.model, places)
    params = files_resolved(request.kind, request.backend, model, request.params, image_of, places)
    per_output = registry.get(request.kind, request.backend, model).load().per_output
    own = {name: params[name] for name in per_output if params.get(name) is not None}
    common = {
        "kind": request.kind,
        "backend": request.backend,
        "model": model,
        **{k: v for k, v in params.items() if k not in own},
    }
    every = [p for p in prompts for _ in range(request.n)]
    seeds = expand(request.seed if request.seed is not None else 0, len(every))  # the job's seed is fixed at submit
    return common, [Unit(j, prompt, seed, own) for j, (prompt, seed) in enumerate(zip(every, seeds, strict=True))]


def generate_calls(
    request: GenerateJob, places: Places, image_of: Callable[[str], Any], outputs_per_call: int = OUTPUTS_PER_CALL
) -> list[tuple[list[int], dict[str, Any]]]:
    """A generate job as (asset positions, aigc.generate keywords) calls, the same on every run of the job.

    Without the scorer's loop: a few outputs per call. With it: one call per prompt, prompt i searching from
    prompt_seed(seed, i) (as one local call does).
    """
    common, units = generate_outputs(request, places, image_of)
    if request.best_of is None and request.min_score is None:
        own = units[0].own if units else {}
        return [
            (
                [u.position for u in chunk],
                {**common, **own, "prompt": [u.prompt for u in chunk], "seed": [u.seed for u in chunk]},
            )
            for start in range(0, len(units), outputs_per_call)
            for chunk in [units[start : start + outputs_per_call]]
        ]
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    loop = {
        "n": request.n,
        "best_of": request.best_of,
        "min_score": request.min_score,
        "max_attempts": request.max_attempts,
        "diverse": request.diverse,
    }
    library = places_library(places) if request.library else None
    seed = request.seed if request.seed is not None else 0
    own = units[0].own if units else {}
    return [
        (
            list(range(i * request.n, (i + 1) * request.n)),
            {**common, **own, **loop, "prompt": prompt, "seed": prompt_seed(seed, i), "library": library},
        )
        for i, prompt in enumerate(prompts)
    ]


def merge_key(request: GenerateJob, places: Places) -> str | None:
    """What jobs must share to be generated in one batched call: kind, backend, model and every knob but those an
    output owns (prompts, seeds, n and chats may differ). A job with the scorer's loop or a stream is not merged,
    nor one that already gives a knob per output."""
    if request.best_of is not None or request.min_score is not None or request.stream:
        return None
    model = model_reference(request.model, places)
    per_output = registry.get(request.kind, request.backend, model).load().per_output
    own = sorted(name for name in per_output if request.params.get(name) is not None)
    if any(
        isinstance(request.params[name], list) and request.params[name] and isinstance(request.params[name][0], list)
        for name in own
    ):
        return None
    shared = {k: v for k, v in request.params.items() if k not in own}
    key = json.dumps([request.kind, request.backend, model, shared, own], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def places_library(places: Places) -> Path | None:
    return places.library


def owned_image(store: Store, data: Path, owner: str | None, asset_id: str) -> Any:
    """An image asset `owner` may use as an input (None: anyone's, as on a team server), opened from the server's
    own files."""
    from ..errors import ConfigError
    from ..media.assets import load

    row = store.asset(asset_id)
    job = store.get(row.job) if row else None
    if row is None or row.kind != "image" or (owner is not None and job is not None and job.owner != owner):
        raise ConfigError(
            f"no image asset {asset_id!r}{' of yours' if owner else ''} to use as the input image.", field="init_image"
        )
    return load(data / row.path).data

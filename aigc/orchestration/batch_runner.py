"""Running a batch: the local engine, the Ray engine (one actor per GPU or CPU worker), progress and summary.

Both engines make the same assets (seeds come from the plan, not the engine) and share one manifest and
resume rule: files and manifest lines are written here, in the driver, as each result comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .. import checks, console
from .. import seeds as seed_rule
from ..errors import ConfigError
from ..media.assets import Asset, load
from ..progress import report as report_progress
from ..records import Progress
from ..storage import clean_partial, locked_dir, path_arg, write_atomic, write_json
from .batch import Job, Manifest, Summary, chunks, make, plan, read_prompts, record_of

ENGINES = ("local", "ray")
SEED_FILE = "batch.json"  # the batch's seed, so the same command without --seed resumes with it


def batch(
    prompts: str | Path,
    out: str | Path,
    *,
    kind: str,
    n: int = 1,
    seed: int | None = None,
    backend: str | None = None,
    model: str | None = None,
    best_of: int | None = None,
    min_score: float | None = None,
    max_attempts: int | None = None,
    engine: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    batch_size: int = 8,
    manager=None,
    on_asset: Callable[[Job, Asset, Path], None] | None = None,
    progress: Callable[[Progress], None] | Literal[False] | None = None,
    **params: Any,
) -> Summary:
    """Make `n` variants of every prompt in a .txt/.csv/.jsonl file into `out`, resuming what is done.

    One batch writes a directory at a time (a second one on the same `out` is refused while the first runs);
    temporary files a killed run left behind are removed, and finished assets are skipped. Without a seed, a
    batch already in `out` keeps the seed it recorded (batch.json), and a new one draws a fresh one. `progress`
    hears the assets as they are written and the work inside (as for aigc.generate; None: bars on a terminal).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r}; use 'local' or 'ray'.", field="engine")
    checks.whole("batch_size", batch_size, least=1)
    if workers is not None:
        checks.whole("workers", workers, least=1)
    out = path_arg(out, "out", field="out")
    seed = seed_rule.chosen(recorded_seed(out) if seed is None else seed)
    loop = {
        k: v
        for k, v in {"best_of": best_of, "min_score": min_score, "max_attempts": max_attempts}.items()
        if v is not None
    }
    check_batch_wide(kind, n, backend, model, params, loop)  # what every row shares fails once, up front
    rows = read_prompts(path_arg(prompts, "prompts"))
    jobs, failures = plan(rows, kind=kind, n=n, seed=seed, backend=backend, model=model, params=params, loop=loop)
    with locked_dir(out, "batch") as out:
        clean_partial(out)
        if not (out / SEED_FILE).exists():
            write_json(out / SEED_FILE, {"seed": seed})
        manifest = Manifest(out)
        summary = Summary(failed=failures)
        todo = _todo(jobs, manifest, out, summary, on_asset)
        groups = chunks(todo, batch_size)
        with console.scope(progress):
            results = _run_local(groups, manager) if engine == "local" else _run_ray(groups, workers, ray_address)
            _collect(results, len(todo), out, manifest, summary, on_asset)
        if summary.failed:
            lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in summary.failed)
            write_atomic(out / "failures.jsonl", lines.encode("utf-8"))
        from .gallery import write_gallery

        write_gallery(out, manifest.records())
        summary.malformed = len(manifest.skipped)
    return summary


def recorded_seed(out: Path) -> int | None:
    """The seed a batch in `out` started with (batch.json); 0 for a batch made before seeds were recorded (their
    default), None for a new directory."""
    try:
        seed = json.loads((out / SEED_FILE).read_text(encoding="utf-8")).get("seed")
    except FileNotFoundError:
        return 0 if (out / "manifest.jsonl").exists() else None
    except (OSError, ValueError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def check_batch_wide(
    kind: str, n: int, backend: str | None, model: str | None, params: dict[str, Any], loop: dict[str, Any]
) -> None:
    """The batch's own kind, n, backend, knobs and scorer settings, checked once (rows may override them)."""
    from .. import limits
    from ..api import check_loop
    from ..runtime import registry

    checks.whole("n", n, least=1)
    limits.check("outputs", n, "n (variants per prompt)", field="n")
    spec = registry.get(kind, backend, model)  # the kind, and the backend or model if given
    if backend is not None or model is not None:  # else rows may each choose another backend for these knobs
        spec.load().check_params(params)
    if model is not None:
        registry.check_model(spec, model)
    check_loop(1, None, loop.get("best_of"), loop.get("min_score"), loop.get("max_attempts"), False)


def _todo(
    jobs: list[Job],
    manifest: Manifest,
    out: Path,
    summary: Summary,
    on_asset: Callable[[Job, Asset, Path], None] | None,
) -> list[Job]:
    """The jobs the manifest does not record as finished (with their file on disk); the rest are skipped (and
    handed to `on_asset` again, for a caller that must be sure it saw them)."""
    done = {f"{r['row']}:{r['variant']}": r for r in manifest.records() if (out / r["file"]).exists()}
    todo = []
    for job in jobs:
        finished = done.get(job.key)
        if finished is None:
            todo.append(job)
            continue
        if on_asset:
            on_asset(job, load(out / finished["file"]), out / finished["file"])
        summary.skipped += 1
        if finished.get("fingerprint") != job.fingerprint:
            summary.changed.append({"row": job.row, "variant": job.variant, "file": finished["file"]})
    return todo


def _collect(
    results,
    total: int,
    out: Path,
    manifest: Manifest,
    summary: Summary,
    on_asset: Callable[[Job, Asset, Path], None] | None,
) -> None:
    """Write each result as it comes back: the asset's file first, then its manifest line."""
    report_progress("batch", 0, total)
    for done, (job, asset, error) in enumerate(results, 1):
        if asset is None:
            summary.failed.append({"row": job.row, "variant": job.variant, "prompt": job.prompt, "reason": error})
        else:
            asset.save(out / job.file_name())
            manifest.append(record_of(job, asset, job.file_name()))
            summary.made += 1
            if on_asset:
                on_asset(job, asset, out / job.file_name())
        report_progress("batch", done, total)


def _run_local(groups: list[list[Job]], manager):
    for group in groups:
        yield from make(group, manager)


def _run_ray(groups: list[list[Job]], workers: int | None, address: str | None):
    """Spread the groups over Ray actors, each holding its models through its own device manager."""
    try:
        import ray
    except ImportError:
        raise ConfigError("engine='ray' needs Ray: pip install 'aigc[ray]' (or `ray`).") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or gpus or 2
        worker_class = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(BatchWorker)
        actors = [worker_class.remote() for _ in range(count)]
        # ray types an actor's methods as the plain functions (no .remote) unless each is marked @ray.method,
        # which needs ray at import time; ray is optional here
        pending = {
            actors[i % count].make.remote(group): group  # type: ignore[union-attr]
            for i, group in enumerate(groups)
        }
        while pending:  # results stream back as each group finishes, whatever the order
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                yield from ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


class BatchWorker:
    """A Ray actor: one device manager, so each worker loads its models once for all its groups."""

    def __init__(self) -> None:
        from ..runtime.devices import DeviceManager

        self.manager = DeviceManager()

    def make(self, jobs: list[Job]):
        return make(jobs, self.manager)

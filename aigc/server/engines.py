"""Where the server's generator calls run: in this process on its device manager (`--engine local`), or on Ray
actors (`--engine ray`: one per GPU, or `--workers N` on CPU; a local Ray or an existing cluster). The queue
stays in the server's SQLite either way; each executor gets its own runner thread, so N actors run N jobs
at once. Every output's seed is its own, so where a call runs never changes what it makes.

Only generate jobs' calls go to an executor: workflow runs and batches write their own directories as they
go (journals, manifests), so they run in the server process on its device manager whatever the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import api
from ..errors import ConfigError
from ..records import Progress

ENGINES = ("local", "ray")


class LocalExecutor:
    """Generate calls on this process's device manager (with progress and streamed text)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def generate(self, progress: Callable[[Progress], None] | None = None, **call: Any) -> list[Any]:
        return api.generate(manager=self.manager, progress=progress, **call)

    def close(self) -> None:
        pass


class RayExecutor:
    """Generate calls on one Ray actor, which keeps its models loaded between calls. Progress and streamed text
    stay on the actor (a call reports when it returns)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def generate(self, progress: Callable[[Progress], None] | None = None, **call: Any) -> list[Any]:
        import ray

        call.pop("streamer", None)
        try:
            return ray.get(self.actor.generate.remote(call))
        except ray.exceptions.RayTaskError as error:  # an aigc error on the actor is the same error here
            raise (error.cause if isinstance(error.cause, Exception) else error) from None

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


class GenerationActor:
    """A Ray actor: its own device manager (one GPU, or the CPU), so its models load once for all its calls."""

    def __init__(self) -> None:
        from ..runtime.devices import DeviceManager

        self.manager = DeviceManager()

    def generate(self, call: dict[str, Any]) -> list[Any]:
        return api.generate(manager=self.manager, progress=False, **call)  # progress arrives per call (the driver)


def check(engine: str, workers: int | None = None, address: str | None = None) -> None:
    """The engine options, checked before the server starts (Ray installed too, for --engine ray)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}; use local or ray.")
    if engine == "local" and (workers is not None or address is not None):
        raise ConfigError(
            "--workers and --ray-address are for --engine ray; the local engine runs one job at a time "
            "on this process's device."
        )
    if workers is not None and not 1 <= workers <= 256:
        raise ConfigError(f"--workers {workers}: use 1-256 Ray actors.")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--engine ray needs Ray: pip install 'aigc[ray]'.") from None


def executors(engine: str, manager: Any, workers: int | None = None, address: str | None = None) -> list[Any]:
    """One executor per worker the engine has: this process, or Ray actors (a local Ray, or the cluster at
    `address`), each with its own device manager."""
    check(engine, workers, address)
    if engine == "local":
        return [LocalExecutor(manager)]
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(GenerationActor)
    count = workers or gpus or 2
    return [RayExecutor(actor.remote()) for _ in range(count)]


def shut_down(pool: list[Any]) -> None:
    """Stop the executors; a Ray this server started goes with them."""
    for executor in pool:
        executor.close()
    if any(isinstance(executor, RayExecutor) for executor in pool):
        import ray

        ray.shutdown()

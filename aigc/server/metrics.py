"""/metrics in Prometheus' text format (prometheus_client): queue depth, jobs by state, seconds per job,
models loaded and device memory, read from the store and the device manager when scraped."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily


class Metrics:
    def __init__(self, store: Any, manager: Any) -> None:
        self.registry = CollectorRegistry()
        self.seconds = Histogram(
            "aigc_job_seconds",
            "Seconds a job took to run, by type",
            ["type"],
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800, float("inf")),
        )
        self.registry.register(_Collector(store, manager))

    def observe(self, job_type: str, seconds: float) -> None:
        self.seconds.labels(job_type).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """Gauges computed at scrape time, so they are never stale."""

    def __init__(self, store: Any, manager: Any) -> None:
        self.store, self.manager = store, manager

    def collect(self):
        counts = self.store.counts()
        depth = GaugeMetricFamily("aigc_queue_depth", "Jobs pending or running")
        depth.add_metric([], counts["pending"] + counts["running"])
        jobs = GaugeMetricFamily("aigc_jobs", "Jobs by state", labels=["state"])
        for state, count in counts.items():
            jobs.add_metric([state], count)
        stats = self.manager.stats()
        loaded = GaugeMetricFamily("aigc_models_loaded", "Models in the device manager's cache")
        loaded.add_metric([], len(stats["models"]))
        memory = GaugeMetricFamily("aigc_model_memory_bytes", "Bytes of model weights on the device")
        memory.add_metric([], stats["used_mb"] * 2**20)
        yield from (depth, jobs, loaded, memory)
        if "cuda_allocated_mb" in stats:
            device = GaugeMetricFamily("aigc_device_allocated_bytes", "CUDA memory allocated")
            device.add_metric([], stats["cuda_allocated_mb"] * 2**20)
            yield device

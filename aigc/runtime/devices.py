"""The shared device manager: one device and dtype policy, and one memory-budgeted cache of loaded models.

Every generator (and the scorer) loads its weights through the process-wide manager, so models are
loaded once, share one memory budget, and are evicted least-recently-used when a new one needs room.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ..errors import ConfigError, DeviceError, GenerationError, one_of
from ..progress import report as report_progress
from .models import public_name

T = TypeVar("T")
R = TypeVar("R")

GiB = 1024**3
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """'auto' (the default, or $AIGC_DEVICE) picks CUDA, then MPS, then CPU; an explicit device must exist."""
    spec = str(spec or os.environ.get("AIGC_DEVICE") or "auto").strip().lower()
    kind = spec.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"device={spec!r} is not a device; use {one_of(DEVICE_CHOICES)} (or 'cuda:N').")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device={spec!r} was asked for, but this torch ({torch.__version__}) sees no CUDA GPU. "
                "Install a CUDA build of torch and check `nvidia-smi`, or use device='cpu' or 'auto'."
            )
        device = torch.device(spec)
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device={spec!r}: only {torch.cuda.device_count()} CUDA device(s) exist here.")
        return torch.device("cuda", index)
    if kind == "mps" and not _mps_available():
        raise DeviceError(f"device={spec!r} was asked for, but MPS is not available; use 'cpu' or 'auto'.")
    return torch.device(kind)


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA where supported, else fp16 there; fp16 on MPS; fp32 on CPU. $AIGC_DTYPE or `spec` overrides."""
    if isinstance(spec, torch.dtype):
        return spec
    spec = spec or os.environ.get("AIGC_DTYPE") or "auto"
    name = str(spec).strip().lower().removeprefix("torch.")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype={spec!r} is not a dtype; use 'auto', {one_of(sorted(DTYPES))}.", field="dtype")
    return DTYPES[name]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16), read once from its flags.

    A flag, not a timing: a timed choice would flip with the machine's load, and with it the outputs. On such
    CPUs torch's packed int4/int8 kernels with bf16 activations read 4-8x fewer bytes a token than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def require_compiler(device: torch.device) -> None:
    """compile=True on the CPU needs inductor's C++ compiler: say so before any model loads."""
    if device.type != "cpu":
        return
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()  # runs `<compiler> --version` for each candidate
    except Exception:  # noqa: BLE001 - InvalidCxxCompiler, or an error from a broken installation
        raise ConfigError(
            "compile=True on the CPU needs a C++ compiler for torch.compile (g++ or clang++); "
            "install one, or pass compile=False."
        ) from None


def parse_bytes(text: str | int | float) -> int:
    """'6GiB', '512MB', '2.5G' or a plain number of bytes."""
    units = {"k": 1024, "m": 1024**2, "g": GiB, "t": 1024**4}
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise ConfigError(f"memory size {text!r} is not understood; write e.g. '6GiB', '512MB' or 1000000.")
    value = str(text).strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(value[-1:], 1)
    try:
        size = float(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise ConfigError(f"memory size {text!r} is not understood; write e.g. '6GiB', '512MB' or 1000000.") from None
    if not math.isfinite(size) or size < 0:
        raise ConfigError(
            f"memory size {text!r} must be a size of 0 or more, e.g. '6GiB' (AIGC_BUDGET, "
            "AIGC_RESERVE, budget=, reserve=)."
        )
    return int(size)


def modules_of(value: Any) -> list[torch.nn.Module]:
    """The torch modules inside a cached value: a module, a diffusers pipeline, or a record holding modules."""
    if isinstance(value, torch.nn.Module):
        return [value]
    parts = getattr(value, "components", None)
    if not isinstance(parts, dict):
        parts = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    if isinstance(value, (list, tuple)):
        parts = dict(enumerate(value))
    return [m for m in parts.values() if isinstance(m, torch.nn.Module)]


def size_in_bytes(value: Any) -> int:
    """Bytes held by parameters and buffers, counting shared (tied) tensors once."""
    seen: dict[tuple, int] = {}
    for module in modules_of(value):
        for tensor in [*module.parameters(), *module.buffers()]:
            key = (tensor.device, tensor.data_ptr())
            seen[key] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@dataclass(frozen=True)
class ModelKey:
    """What a cached model is: its family (the backend's weights type), reference, dtype and device, plus the
    load-time switches that make it another copy (a diffusion pipeline with fused attention, say)."""

    family: str
    model: str
    dtype: str
    device: str
    variant: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.variant)


@dataclass
class _Entry:
    key: ModelKey
    value: Any
    nbytes: int
    where: str  # the device its weights sit on now: the manager's device, or "cpu" once offloaded
    pins: int = 0
    last_used: float = field(default_factory=time.monotonic)


class DeviceManager:
    """Loads models once, keeps them within a memory budget, and runs work with an out-of-memory fallback.

    Thread-safe: a server or a Ray actor may share one manager between threads. Models in use are pinned
    and never evicted; the least recently used unpinned model goes first, offloaded to CPU RAM when the
    device is an accelerator and `offload` is on, dropped otherwise.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        budget: int | str | None = None,
        reserve: int | str | None = None,
        offload: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # the dtype was left to aigc, on a CPU with fast bf16: backends may run their own 4-bit files packed
        spec = dtype if isinstance(dtype, torch.dtype) else str(dtype or os.environ.get("AIGC_DTYPE") or "auto")
        chosen = str(spec).strip().lower() == "auto"
        self.pack_cpu_weights = chosen and self.device.type == "cpu" and cpu_has_fast_bf16()
        capacity = _capacity_bytes(self.device)
        self.reserve = parse_bytes(
            reserve if reserve is not None else os.environ.get("AIGC_RESERVE", min(2 * GiB, capacity // 10))
        )
        budget = budget if budget is not None else os.environ.get("AIGC_BUDGET")
        self.budget = parse_bytes(budget) if budget is not None else max(capacity - self.reserve, 0)
        self.offload = offload and self.device.type != "cpu"
        self._entries: OrderedDict[ModelKey, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._key_locks: dict[ModelKey, threading.Lock] = {}
        self.counters = {"loads": 0, "hits": 0, "evictions": 0, "offloads": 0, "oom_retries": 0}
        self.shared: dict[str, Any] = {}  # objects made once per manager and shared by its users (the scorer)

    def key(
        self, family: str, model: str, dtype: torch.dtype | None = None, variant: dict[str, Any] | None = None
    ) -> ModelKey:
        """The cache key of `model` loaded by a backend of `family` on this manager's device."""
        return ModelKey(
            family,
            model,
            str(dtype or self.dtype).removeprefix("torch."),
            str(self.device),
            tuple(sorted((variant or {}).items())),
        )

    @contextmanager
    def use(self, key: ModelKey, loader: Callable[[], T]) -> Iterator[T]:
        """Yield the model for `key` on this device, loading it with `loader()` the first time.

        `loader` returns the model (or a record of modules) in CPU memory; the manager measures it, makes
        room within the budget, and moves it to the device. The model stays pinned until the block ends.
        """
        entry, loaded_now = self._acquire(key, loader)
        try:
            if loaded_now:
                report_progress("load", 1, 1, public_name(key.model))  # in the try: a sink that raises still unpins
            yield entry.value
        finally:
            with self._lock:
                entry.pins -= 1
                entry.last_used = time.monotonic()

    def _acquire(self, key: ModelKey, loader: Callable[[], Any]) -> tuple[_Entry, bool]:
        """The pinned entry for `key`, and whether it was loaded just now."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one thread loads a given model; others wait for it instead of loading it twice
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.pins += 1
                    self._entries.move_to_end(key)
                    self.counters["hits"] += 1
                    if entry.where != str(self.device):
                        self._make_room(entry.nbytes, keep=key)
                        _move(entry.value, self.device)
                        entry.where = str(self.device)
                    return entry, False
            report_progress("load", 0, 1, public_name(key.model))  # the slow part a person waits through: say what
            value = loader()  # slow: outside the global lock so other models stay usable meanwhile
            nbytes = size_in_bytes(value)
            with self._lock:
                self._make_room(nbytes, keep=key)
                _move(value, self.device)
                entry = _Entry(key, value, nbytes, str(self.device), pins=1)
                self._entries[key] = entry
                self.counters["loads"] += 1
                return entry, True

    def _on_device_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.where == str(self.device))

    def _make_room(self, nbytes: int, keep: ModelKey) -> None:
        """Evict least recently used, unpinned models until `nbytes` more fit in the budget."""
        for entry in list(self._entries.values()):
            if self._on_device_bytes() + nbytes <= self.budget:
                return
            if entry.key != keep and entry.pins == 0 and entry.where == str(self.device):
                self._evict(entry)
        if self._on_device_bytes() + nbytes > self.budget:
            warnings.warn(
                f"aigc: {nbytes / GiB:.2f} GiB more does not fit the {self.budget / GiB:.2f} GiB budget on "
                f"{self.device} even after evicting every idle model; loading anyway. Raise the budget "
                "(AIGC_BUDGET) or use a smaller dtype if this runs out of memory.",
                stacklevel=4,
            )

    def _evict(self, entry: _Entry) -> None:
        if self.offload:
            _move(entry.value, torch.device("cpu"))
            entry.where = "cpu"
            self.counters["offloads"] += 1
        else:
            del self._entries[entry.key]
            self.counters["evictions"] += 1
        gc.collect()
        _empty_cache(self.device)

    def evict_all(self) -> None:
        """Drop every unpinned model (e.g. before a big job, or after out-of-memory)."""
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.pins == 0:
                    del self._entries[entry.key]
                    self.counters["evictions"] += 1
            gc.collect()
            _empty_cache(self.device)

    def release(self, family: str, model: str) -> int:
        """Drop the idle cached copies of one model (any dtype or variant): a workflow does this once a model
        is done."""
        with self._lock:
            gone = [
                e for e in self._entries.values() if e.key.family == family and e.key.model == model and e.pins == 0
            ]
            for entry in gone:
                del self._entries[entry.key]
                self.counters["evictions"] += 1
            if gone:
                gc.collect()
                _empty_cache(self.device)
        return len(gone)

    def run_batched(
        self, fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], batch_size: int | None = None
    ) -> list[R]:
        """Run `fn` over `items` in chunks; on out-of-memory free what can be freed and halve the chunk.

        Generators give each item its own seed, so results do not depend on how the items were chunked.
        """
        size = max(1, min(batch_size or len(items), len(items) or 1))
        results: list[R] = []
        start = 0
        while start < len(items):
            chunk = items[start : start + size]
            try:
                results.extend(fn(chunk))
                start += len(chunk)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if size == 1:
                    raise GenerationError(
                        f"out of memory on {self.device} even at batch size 1 (budget "
                        f"{self.budget / GiB:.1f} GiB). Use a smaller model or dtype, fewer tokens or "
                        "pixels, or another device (AIGC_DEVICE=cpu)."
                    ) from error
                del error  # drop the traceback's references to the failed batch's tensors
                self.evict_all()
                size = max(1, size // 2)
                with self._lock:
                    self.counters["oom_retries"] += 1
        return results

    def stats(self) -> dict[str, Any]:
        """What is loaded where, what it runs as, how much memory it holds, and what the cache has done so far.

        A model's `runs` is what its loader reports (a cached value's `runs` attribute: the packed text path says
        "int4 (the GGUF's Q4_1 codes), bf16 activations"), else the dtype it was loaded in."""
        now = time.monotonic()
        with self._lock:
            models = [
                {
                    "backend": e.key.family,
                    "model": e.key.model,
                    "dtype": e.key.dtype,
                    "variant": e.key.describe(),
                    "runs": getattr(e.value, "runs", "") or e.key.dtype,
                    "where": e.where,
                    "mb": round(e.nbytes / 1024**2, 1),
                    "in_use": e.pins > 0,
                    "idle_s": round(now - e.last_used, 1),
                }
                for e in self._entries.values()
            ]
            stats = {
                "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch."),
                "packs_cpu_weights": self.pack_cpu_weights,  # Q4_1 GGUF text models run packed in 4 bits
                "budget_mb": round(self.budget / 1024**2, 1),
                "reserve_mb": round(self.reserve / 1024**2, 1),
                "used_mb": round(self._on_device_bytes() / 1024**2, 1),
                "models": models,
                **self.counters,
            }
        if self.device.type == "cuda":
            stats["cuda_allocated_mb"] = round(torch.cuda.memory_allocated(self.device) / 1024**2, 1)
            stats["cuda_reserved_mb"] = round(torch.cuda.memory_reserved(self.device) / 1024**2, 1)
        return stats


def _move(value: Any, device: torch.device) -> None:
    for module in modules_of(value):
        module.to(device)


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _capacity_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 * GiB
    return ram // 2  # CPU and MPS share RAM with everything else: keep models within half of it


_default: DeviceManager | None = None
_default_lock = threading.Lock()


def get_manager() -> DeviceManager:
    """The process-wide manager every generator shares, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DeviceManager()
        return _default


def configure(device: str | None = None, dtype: str | None = None, **options: Any) -> DeviceManager:
    """Replace the process-wide manager (e.g. from the CLI's --device); the idle models the old one held are
    released, and everything that shares the process-wide manager (the default scorer too) uses the new one."""
    global _default
    manager = DeviceManager(device, dtype, **options)
    with _default_lock:
        old, _default = _default, manager
    if old is not None:
        old.evict_all()
    return manager


def stats() -> dict[str, Any]:
    """Stats of the process-wide manager."""
    return get_manager().stats()

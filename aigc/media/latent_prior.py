"""The GAN's latent prior file (.safetensors or .json): where `aigc tune image --backend gan` writes what it
learned and where the GAN reads it from. A file format, so it lives below both (tuning/gan_prior.py learns the
prior; generators/image/gan.py samples from it).

A prior is a Gaussian over the GAN's latents: sampling maps each seed's latent eps to mean + std * eps, so a seed
still picks one image for a given prior.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

FORMAT = "aigc-gan-prior"
MAX_DIMS = 4096  # a latent of more dimensions than this is no GAN prior (the face pack's has 100)


@dataclass(frozen=True)
class Prior:
    mean: np.ndarray
    std: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def nz(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, eps: Any) -> Any:
        """A seed's standard-normal latent (a torch tensor [nz, 1, 1]) moved into this prior."""
        import torch

        mean = torch.from_numpy(self.mean).view(-1, 1, 1)
        std = torch.from_numpy(self.std).view(-1, 1, 1)
        return mean + std * eps


def save_prior(prior: Prior, path: str | Path) -> Path:
    """Write the prior atomically as .safetensors (tensors mean, std; the record as metadata) or .json."""
    from ..storage import path_arg, write_atomic, write_json

    path = path_arg(path, "--out", field="out")
    if path.suffix == ".json":
        write_json(path, {**prior.record, "mean": prior.mean.tolist(), "std": prior.std.tolist()})
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save

        write_atomic(path, save({"mean": prior.mean, "std": prior.std}, metadata={FORMAT: json.dumps(prior.record)}))
    else:
        raise ConfigError(f"--out {path}: a prior is a .safetensors or .json file.", field="out")
    return path


def read_prior(path: str) -> Prior:
    """The prior in a file, checked (every value finite, std > 0), or a ConfigError naming what is wrong.

    Only a regular file is read, within the file_mb limit (storage.read_bytes): a FIFO would block the caller (a
    server's worker) until something wrote into it, /dev/zero would never end."""
    from ..storage import path_arg, regular_file

    file = path_arg(path, "prior", field="prior")
    try:
        size = regular_file(file, "the prior")
        mtime = file.stat().st_mtime_ns
    except (ConfigError, OSError) as error:
        reason = str(error).removeprefix(f"cannot read the prior {file}: ").rstrip(".")
        raise ConfigError(
            f"prior={path!r}: {reason[:1].lower() + reason[1:]}; pass a prior made by `aigc tune image --backend gan`.",
            field="prior",
        ) from None
    return _read(str(file.resolve()), size, mtime)


@functools.lru_cache(maxsize=16)
def _read(path: str, size: int, mtime: int) -> Prior:
    from ..storage import read_bytes

    try:  # the size limit, and the file checked again: what was a file a moment ago is read as one or refused
        data = read_bytes(path, "the prior")
    except ConfigError as error:
        raise ConfigError(f"prior={path!r}: {error}", field="prior") from None
    try:
        mean, std, record = _load_json(data) if path.endswith(".json") else _load_safetensors(data)
    except Exception as error:  # noqa: BLE001 - json, numpy and safetensors each raise their own on a bad file
        raise ConfigError(
            f"prior={path!r} is not a readable GAN prior ({type(error).__name__}); make it again with "
            "`aigc tune image --backend gan`.",
            field="prior",
        ) from None
    if (
        mean.ndim != 1
        or mean.shape != std.shape
        or not 0 < mean.size <= MAX_DIMS
        or not np.all(np.isfinite(mean))
        or not np.all(np.isfinite(std))
        or not np.all(std > 0)
    ):
        raise ConfigError(
            f"prior={path!r} holds no valid Gaussian (mean and std: equal-length finite vectors, std "
            "> 0); make it again with `aigc tune image --backend gan`.",
            field="prior",
        )
    return Prior(mean.astype(np.float32), std.astype(np.float32), record)


def _load_json(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    value = json.loads(data.decode("utf-8"))
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise ValueError("not a prior")
    record = {k: v for k, v in value.items() if k not in ("mean", "std")}
    return np.asarray(value["mean"], np.float64), np.asarray(value["std"], np.float64), record


def _load_safetensors(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from safetensors.numpy import load

    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    record = json.loads(header["__metadata__"][FORMAT])
    tensors = load(data)
    return tensors["mean"], tensors["std"], record

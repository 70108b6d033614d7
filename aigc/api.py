"""generate(): check the request, resolve the backend, run the generator through the device manager."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Sequence

from . import registry
from .assets import Asset
from .errors import ConfigError

if TYPE_CHECKING:
    from .devices import DeviceManager

MAX_SEED = 2**63 - 1


def generate(
    kind: str,
    prompt: str | Sequence[str],
    *,
    backend: str | None = None,
    model: str | None = None,
    n: int = 1,
    seed: int | Sequence[int] | None = None,
    best_of: int | None = None,
    min_score: float | None = None,
    max_attempts: int | None = None,
    manager: DeviceManager | None = None,
    **params: Any,
) -> list[Asset]:
    """Generate `n` outputs per prompt and return them as Assets, prompt by prompt.

    `seed` is an int (output i gets seed + i) or one seed per output; each Asset records the seed that
    reproduces it alone. `params` are the backend's own knobs; a wrong one fails before any model loads.
    """
    prompts = _check_prompts(prompt)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n={n!r} must be a whole number >= 1 (outputs per prompt).")
    for name, value in (("best_of", best_of), ("min_score", min_score), ("max_attempts", max_attempts)):
        if value is not None:
            raise ConfigError(f"{name}= needs the creativity scorer, which this version of aigc does not have yet.")
    spec = registry.get(kind, backend)
    generator_class = spec.load()
    checked = generator_class.check_params(params)
    total = len(prompts) * n
    seeds = _expand_seeds(seed, total)
    if checked.get("streamer") is not None and total != 1:
        raise ConfigError(f"streamer= streams one output, but this request makes {total}; use n=1 and one prompt.")
    model_ref = model or spec.default_model
    if not model_ref:
        raise ConfigError(f"backend {kind}/{spec.name} has no default model; pass model=.")

    from .devices import get_manager

    generator = generator_class(model_ref, manager or get_manager(), backend=spec.name)
    expanded = [p for p in prompts for _ in range(n)]
    start = time.perf_counter()
    outputs = generator.generate(expanded, seeds, **checked)
    elapsed = time.perf_counter() - start
    recorded = generator_class.recorded(checked)
    timings = {"batch_s": round(elapsed, 4), "per_item_s": round(elapsed / total, 4)}
    return [
        Asset(kind=spec.kind, data=out.data, prompt=p, seed=s, backend=spec.name, model=model_ref,
              params=dict(recorded), timings=dict(timings), info=out.info)
        for p, s, out in zip(expanded, seeds, outputs)
    ]


def interpolate(seed_a: int, seed_b: int, frames: int = 8, *, model: str | None = None,
                manager: DeviceManager | None = None, **params: Any) -> Asset:
    """A strip of GAN frames walking the latent from `seed_a` to `seed_b` (spherical interpolation)."""
    return generate("image", "interpolation", backend="gan", model=model, seed=seed_a, frames=frames,
                    to_seed=seed_b, manager=manager, **params)[0]


def _check_prompts(prompt: str | Sequence[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if prompts is None:
        raise ConfigError(f"prompt must be a string or a list of strings, not {type(prompt).__name__}.")
    if not prompts:
        raise ConfigError("prompt is an empty list; give at least one prompt.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            where = "prompt" if isinstance(prompt, str) else f"prompt[{i}]"
            raise ConfigError(f"{where}={p!r} is empty; say what to generate.")
    return prompts


def _expand_seeds(seed: int | Sequence[int] | None, total: int) -> list[int]:
    """One seed per output: seed, seed+1, ... for an int; a list as given; fresh random ones for None."""
    if seed is None:
        seed = secrets.randbelow(2**31)
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds = [seed + i for i in range(total)]
    elif isinstance(seed, (list, tuple)):
        seeds = list(seed)
        if len(seeds) != total:
            raise ConfigError(f"seed has {len(seeds)} values but this request makes {total} outputs; give one per output.")
    else:
        raise ConfigError(f"seed={seed!r} must be an int or a list of ints.")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise ConfigError(f"seed {s!r} must be an int between 0 and 2**63-1.")
    return seeds

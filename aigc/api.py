"""generate(): check the request, resolve the backend, run the generator through the device manager."""

from __future__ import annotations

import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Sequence

from . import registry
from .assets import Asset
from .errors import ConfigError

if TYPE_CHECKING:
    from .devices import DeviceManager
    from .scoring.library import Library
    from .scoring.scorer import CreativityScorer

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
    diverse: bool = False,
    library: Library | str | os.PathLike | bool | None = None,
    scorer: CreativityScorer | None = None,
    manager: DeviceManager | None = None,
    **params: Any,
) -> list[Asset]:
    """Generate `n` outputs per prompt and return them as Assets, prompt by prompt.

    `seed` is an int (output i gets seed + i) or one seed per output; each Asset records the seed that
    reproduces it alone. `params` are the backend's own knobs; a wrong one fails before any model loads.

    With `best_of=N` the scorer judges N candidates per prompt and the `n` best come back ranked (with
    `diverse=True`, the n that best balance score and variety). With `min_score`, candidates are re-sampled
    with fresh seeds and nudged knobs, up to `max_attempts` rounds (default 4), until n clear the bar.
    Chosen assets are added to the `library` (default: the user's; `library=False` opts out) so later
    requests are judged novel against them.
    """
    prompts = _check_prompts(prompt)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n={n!r} must be a whole number >= 1 (outputs per prompt).")
    scoring = _check_loop(n, seed, best_of, min_score, max_attempts, diverse)
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

    manager = manager or get_manager()
    generator = generator_class(model_ref, manager, backend=spec.name)
    if checked.get("refine") and checked.get("objective") is None:  # GAN refinement climbs the scorer's relevance
        from .scoring.scorer import CreativityScorer

        scorer = scorer or CreativityScorer(manager)
        checked["objective"] = scorer.image_objective()
    if not scoring:
        return _produce(generator, spec.kind, model_ref, [p for p in prompts for _ in range(n)], seeds, checked)
    return _search(generator, spec.kind, model_ref, prompts, seeds[0], checked, n=n, best_of=best_of,
                   min_score=min_score, max_attempts=max_attempts, diverse=diverse, library=library, scorer=scorer,
                   manager=manager)


def score(items: Sequence[Any], prompt: str | None = None, *, library: Library | str | os.PathLike | None = None,
          weights: dict[str, float] | None = None, manager: DeviceManager | None = None) -> list[dict[str, Any]]:
    """Score Assets or raw data (str, PIL image, Audio or (samples, rate)) for a prompt: one dict per item.

    Each dict holds relevance, novelty and quality in [0, 1] (None where a part cannot be measured here),
    their sub-parts, and `score`. Assets carry their own prompt; `prompt` overrides it.
    """
    from .scoring.library import Library
    from .scoring.scorer import CreativityScorer, default_scorer

    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ConfigError(f"prompt={prompt!r} is empty; say what the items should answer.")
    scorer = CreativityScorer(manager, weights=weights) if (weights or manager) else default_scorer()
    chosen = library if isinstance(library, Library) or library is None else Library(library)
    return scorer.score(list(items), prompt, library=chosen)


def run(recipe: str | os.PathLike, out: str | os.PathLike | None = None, *, seed: int = 0, **inputs: str) -> Any:
    """Run a YAML recipe (`aigc.run("pipelines/story_to_poster.yaml", topic="a city of glass")`).

    Returns step name -> its assets; with `out`, also writes the run directory (assets, run.json, index.html).
    """
    from .recipes import load_recipe, run_to_dir
    from .workflows import run as run_pipeline

    pipeline = load_recipe(recipe)
    if out is None:
        return run_pipeline(pipeline, inputs, seed=seed)
    return run_to_dir(pipeline, inputs, out, seed=seed, source=str(recipe))


def _produce(generator: Any, kind: str, model_ref: str, prompts: list[str], seeds: list[int],
             checked: dict[str, Any]) -> list[Asset]:
    start = time.perf_counter()
    outputs = generator.generate(prompts, seeds, **checked)
    elapsed = time.perf_counter() - start
    recorded = type(generator).recorded(checked)
    timings = {"batch_s": round(elapsed, 4), "per_item_s": round(elapsed / len(prompts), 4)}
    return [
        Asset(kind=kind, data=out.data, prompt=p, seed=s, backend=generator.backend, model=model_ref,
              params=dict(recorded), timings=dict(timings), info=out.info)
        for p, s, out in zip(prompts, seeds, outputs)
    ]


def _check_loop(n: int, seed: Any, best_of: Any, min_score: Any, max_attempts: Any, diverse: Any) -> bool:
    """Validate the scorer's loop arguments; say whether the loop runs at all."""
    if best_of is not None and (not isinstance(best_of, int) or isinstance(best_of, bool) or best_of < n):
        raise ConfigError(f"best_of={best_of!r} must be a whole number >= n ({n}): candidates to choose the n best from.")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                  or not 0 <= min_score <= 1):
        raise ConfigError(f"min_score={min_score!r} must be a number between 0 and 1.")
    if max_attempts is not None:
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise ConfigError(f"max_attempts={max_attempts!r} must be a whole number >= 1.")
        if min_score is None:
            raise ConfigError("max_attempts= only matters with min_score= (the bar to re-sample for); set both.")
    if not isinstance(diverse, bool):
        raise ConfigError(f"diverse={diverse!r} must be True or False.")
    scoring = best_of is not None or min_score is not None
    if diverse and not scoring:
        raise ConfigError("diverse=True chooses among candidates: also pass best_of=N.")
    if scoring and isinstance(seed, (list, tuple)):
        raise ConfigError("with best_of/min_score pass one int seed: candidate seeds are derived from it.")
    return scoring


def _search(generator: Any, kind: str, model_ref: str, prompts: list[str], first_seed: int, checked: dict[str, Any], *,
            n: int, best_of: int | None, min_score: float | None, max_attempts: int | None, diverse: bool,
            library: Any, scorer: Any, manager: Any) -> list[Asset]:
    """best_of / min_score: the scorer's loop, prompt by prompt; chosen assets join the library."""
    import numpy as np

    from .scoring.library import Library
    from .scoring.loop import Policy, search
    from .scoring.scorer import CreativityScorer

    scorer = scorer or CreativityScorer(manager)
    store = None if library is False else library if isinstance(library, Library) else Library(library or None)
    policy = Policy(n=n, per_attempt=best_of or n, min_score=min_score,
                    max_attempts=max_attempts or (4 if min_score is not None else 1), diverse=diverse)

    def judge(assets: list[Asset]) -> None:
        for asset, result in zip(assets, scorer.score(assets, library=store)):
            asset.score = result.pop("score")
            asset.scores = result

    def embed(assets: list[Asset]) -> Any:
        return np.stack([vector for _, vector in scorer.embed(assets)])

    chosen: list[Asset] = []
    span = policy.per_attempt * policy.max_attempts  # seeds each prompt may use, so prompts never share one
    defaults = {name: p.default for name, p in type(generator).params.items()}
    from tqdm.auto import tqdm

    for index, prompt in enumerate(tqdm(prompts, desc="best-of", unit="prompt", leave=False, disable=None)):
        def produce(seeds: list[int], knobs: dict[str, Any], prompt: str = prompt) -> list[Asset]:
            return _produce(generator, kind, model_ref, [prompt] * len(seeds), seeds, knobs)

        chosen += search(produce, judge, embed, policy, first_seed + index * span, dict(checked), defaults)
    if store is not None:
        store.add(chosen, scorer=scorer)
    return chosen


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

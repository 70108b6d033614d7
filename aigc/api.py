"""generate() and score(): check the request, pick the backend, run the generator, and optionally the scorer's loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from . import checks, console, limits
from . import seeds as seed_rule
from .errors import ConfigError
from .media.assets import Asset
from .progress import report as report_progress
from .records import Progress
from .runtime import models, registry

if TYPE_CHECKING:
    from .generators.base import Generator
    from .runtime.devices import DeviceManager
    from .scoring.library import Library
    from .scoring.loop import Policy
    from .scoring.scorer import CreativityScorer

MAX_SEED = seed_rule.MAX_SEED


def generate(
    kind: str,
    prompt: str | Sequence[str],
    *,
    progress: Callable[[Progress], None] | Literal[False] | None = None,
    **request: Any,
) -> list[Asset]:
    """Generate `n` outputs per prompt and return them as Assets, prompt by prompt.

    Keywords: backend, model, n (default 1), seed, best_of, min_score, max_attempts, diverse, library, scorer,
    manager, dtype (this call's: "float32", "bfloat16"...; default: the manager's, which on a CPU with fast bf16
    runs a Q4_1 GGUF such as the SmolLM2 pack packed in 4 bits), and the backend's own knobs (**params; None
    means a knob's default). `seed` is an int (output i gets seed + i) or one seed per output; each Asset records
    the seed that reproduces it alone. Without `backend`, `model` picks it (a diffusers directory -> diffusion...),
    else the kind's default. A wrong argument fails before any model loads.

    With `best_of=N` the scorer judges N candidates per prompt and the `n` best come back ranked (with
    `diverse=True`, the n that best balance score and variety). With `min_score`, candidates are re-sampled
    with fresh seeds and nudged knobs, up to `max_attempts` rounds (default 4), until n clear the bar.
    `library` (a Library, a directory, or True for the default one) is what novelty is judged against, and
    the chosen assets are added to it; without one, the same call always chooses the same way. A library whose
    ratings taught a taste model that beats chance also adds the team's `taste` to the score (scoring/taste.py;
    a Library(..., taste_user=NAME) uses one person's).
    `progress` is called with each Progress (stage, step, total, detail) while the work runs: models loading,
    tokens, denoising steps, the scorer's rounds. Left at None, a call made from a terminal shows bars on stderr
    (and one made inside another's work reports to its caller's sink); False shows nothing.
    """
    return prepare(kind, prompt, **request).run(progress)


@dataclass
class Request:
    """A checked generate request, ready to run: everything was validated, nothing is loaded yet."""

    generator: Generator
    prompts: list[str]
    planned: list[str]  # the prompt of each output (or, with the scorer's loop, of each first-round candidate)
    seeds: list[int]
    params: dict[str, Any]
    policy: Policy | None
    library: Any
    scorer: CreativityScorer | None

    def run(self, progress: Callable[[Progress], None] | Literal[False] | None = None) -> list[Asset]:
        """Generate; `progress` (see generate) hears every stage, model loads included."""
        with console.scope(progress):
            if self.policy is None:
                return produce(self.generator, self.planned, self.seeds, self.params)
            return _search(self, self.policy)


def prepare(
    kind: str,
    prompt: str | Sequence[str],
    *,
    backend: str | None = None,
    model: str | None = None,
    n: int | None = 1,
    seed: int | Sequence[int] | None = None,
    best_of: int | None = None,
    min_score: float | None = None,
    max_attempts: int | None = None,
    diverse: bool = False,
    library: Library | str | os.PathLike | bool | None = None,
    scorer: CreativityScorer | None = None,
    manager: DeviceManager | None = None,
    dtype: str | None = None,
    **params: Any,
) -> Request:
    """Check a generate request the way generate() does, and return it ready to run (a server validates with it
    before queueing). Every error is raised here, before any model loads."""
    prompts = checks.prompts(prompt, allow_empty=True)  # an empty one is refused below, once the backend is known
    n = 1 if n is None else checks.whole("n", n, least=1)
    policy = check_loop(n, seed, best_of, min_score, max_attempts, diverse)
    per_prompt = n if policy is None else policy.per_attempt
    limits.check("outputs", len(prompts) * per_prompt, "the outputs of one call (prompts x n, or x best_of)", field="n")
    planned = [p for p in prompts for _ in range(per_prompt)]
    seeds = seed_rule.expand(seed, len(planned))  # with the loop, the first round's seeds (later rounds derive)
    spec = registry.get(kind, backend, model)
    generator_class = spec.load()
    if generator_class.takes_prompt:
        checks.prompts(prompt)  # only a backend that makes nothing from its prompt (an upscaler) may get ""
    for index, text in enumerate(prompts):
        where = "the prompt" if len(prompts) == 1 else f"prompt[{index}]"
        limits.check(
            "prompt_chars",
            len(text),
            f"{where}'s length in characters ({kind}/{spec.name})",
            generator_class.limits,
            field="prompt",
        )
    checked = generator_class.check_params(params)
    model_ref = model or spec.default_model
    if not model_ref:
        raise ConfigError(f"backend {kind}/{spec.name} has no default model; pass model=.", field="model")
    store = _library(library) if policy is not None else None
    generator = generator_class(model_ref, _manager(manager), backend=spec.name, dtype=dtype)
    checked = generator.resolve(checked)
    if generator.needs_objective(checked):  # GAN refinement climbs the scorer's relevance (nothing loads yet)
        scorer = scorer or _scorer(generator.manager)
        checked["objective"] = scorer.image_objective()
    generator.check(planned, seeds, checked)
    return Request(generator, prompts, planned, seeds, checked, policy, store, scorer)


def score(
    items: Sequence[Any],
    prompt: str | None = None,
    *,
    library: Library | str | os.PathLike | None = None,
    weights: dict[str, float] | None = None,
    manager: DeviceManager | None = None,
    taste_user: str | None = None,
    progress: Callable[[Progress], None] | Literal[False] | None = None,
) -> list[dict[str, Any]]:
    """Score Assets or raw data (str, PIL image, Audio or (samples, rate)) for a prompt: one dict per item.

    Each dict holds relevance, novelty and quality in [0, 1] (None where a part cannot be measured here),
    their sub-parts, and `score`. Assets carry their own prompt; `prompt` overrides it. With a `library` whose
    ratings taught a taste model, `taste` too (the team's, or `taste_user`'s). `progress` as for generate().
    """
    from .scoring.scorer import CreativityScorer, checked_items, default_scorer

    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ConfigError(f"prompt={prompt!r} is empty; say what the items should answer.", field="prompt")
    if prompt is not None:
        checks.plain_text("prompt", prompt)
    checked = checked_items(items, prompt)
    scorer = CreativityScorer(manager, weights=weights) if weights is not None else default_scorer(manager)
    store = _library(library) if library is not None else None
    if taste_user is not None:
        if store is None:
            raise ConfigError("taste_user= needs a library= (the ratings live there).", field="taste_user")
        store = type(store)(store.path, taste_user=taste_user)
    with console.scope(progress):
        return scorer.score(checked, prompt, library=store)


def produce(generator: Generator, prompts: list[str], seeds: list[int], checked: dict[str, Any]) -> list[Asset]:
    """Run a checked request and wrap each output as an Asset with its provenance."""
    start = time.perf_counter()
    outputs = generator.generate(prompts, seeds, **checked)
    elapsed = time.perf_counter() - start
    cls = type(generator)
    recorded = cls.recorded(checked)
    timings = {"batch_s": round(elapsed, 4), "per_item_s": round(elapsed / len(prompts), 4)}
    model_hash = models.short_hash(generator.model) if cls.kind == "image" else None  # A1111's "Model hash"
    return [
        Asset(
            kind=cls.kind,
            data=out.data,
            prompt=p,
            seed=s,
            backend=generator.backend,
            model=generator.model,
            params=dict(recorded),
            timings=dict(timings),
            info=out.info,
            refinement=out.refinement,
            a1111={**cls.a1111(checked, out.info), **({"Model hash": model_hash} if model_hash else {})},
        )
        for p, s, out in zip(prompts, seeds, outputs, strict=True)
    ]


def _search(request: Request, policy: Policy) -> list[Asset]:
    """best_of / min_score: the scorer's loop, prompt by prompt; chosen assets join the library, if one is used.

    Prompt i searches from seeds.derive(seed, "prompt", i) (prompt 0 from the seed itself), so each prompt's
    search is the one generate(that prompt, seed=prompt_seed(seed, i)) runs alone.
    """
    import numpy as np

    from .scoring.loop import Judged, prompt_seed, round_seeds, search

    generator, store = request.generator, request.library
    scorer = request.scorer or _scorer(generator.manager)
    judged = Judged(str(store.path), len(store)) if store is not None else Judged()

    def judge(assets: list[Asset]) -> None:
        for asset, result in zip(assets, scorer.score(assets, library=store), strict=True):
            asset.score = result.pop("score")
            asset.scores = result

    def embed(assets: list[Asset]) -> Any:
        return np.stack([vector for _, vector in scorer.embed(assets)])

    chosen: list[Asset] = []
    for index, prompt in enumerate(request.prompts):
        report_progress("search", index, len(request.prompts), detail=f"best of {policy.per_attempt}")

        def make(seeds: list[int], knobs: dict[str, Any], prompt: str = prompt) -> list[Asset]:
            return produce(generator, [prompt] * len(seeds), seeds, knobs)

        def candidate_seeds(attempt: int, base: int = prompt_seed(request.seeds[0], index)) -> list[int]:
            return round_seeds(base, attempt, policy.per_attempt)

        chosen += search(
            make,
            judge,
            embed,
            policy,
            candidate_seeds,
            dict(request.params),
            type(generator),
            judged,
        )
    report_progress("search", len(request.prompts), len(request.prompts), detail=f"best of {policy.per_attempt}")
    if store is not None:
        store.add(chosen, scorer=scorer)
    return chosen


def interpolate(
    seed_a: int,
    seed_b: int,
    frames: int = 8,
    *,
    model: str | None = None,
    manager: DeviceManager | None = None,
    **params: Any,
) -> Asset:
    """A strip of GAN frames walking the latent from `seed_a` to `seed_b` (spherical interpolation)."""
    return generate(
        "image",
        "interpolation",
        backend="gan",
        model=model,
        seed=seed_a,
        frames=frames,
        to_seed=seed_b,
        manager=manager,
        **params,
    )[0]


def _manager(manager: Any) -> DeviceManager:
    from .runtime.devices import DeviceManager, get_manager

    if manager is not None and not isinstance(manager, DeviceManager):
        raise ConfigError(
            f"manager={manager!r:.40} must be a DeviceManager (aigc.runtime.devices.DeviceManager('cpu')) or "
            "None for the shared one.",
            field="manager",
        )
    return manager or get_manager()


def _scorer(manager: DeviceManager) -> CreativityScorer:
    from .scoring.scorer import default_scorer

    return default_scorer(manager)


def _library(library: Any) -> Library | None:
    """The library a search judges novelty against: none unless asked (True: the default one)."""
    from .scoring.library import Library

    if library is None or library is False:
        return None
    if library is True:
        return Library()
    if isinstance(library, Library):
        return library
    if isinstance(library, (str, os.PathLike)):
        from .storage import path_arg

        return Library(path_arg(library, "library", field="library"))
    raise ConfigError(
        f"library={library!r} must be a Library, a directory, True (the default library) or False.", field="library"
    )


def check_loop(n: int, seed: Any, best_of: Any, min_score: Any, max_attempts: Any, diverse: Any) -> Policy | None:
    """Validate the scorer's loop arguments (for every front end); the loop's policy, or None when it does not run."""
    if best_of is not None and (not isinstance(best_of, int) or isinstance(best_of, bool) or best_of < n):
        raise ConfigError(
            f"best_of={best_of!r} must be a whole number >= n ({n}): candidates to choose the n best from.",
            field="best_of",
        )
    if best_of is not None:
        limits.check("best_of", best_of, "best_of", field="best_of")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1
    ):
        raise ConfigError(f"min_score={min_score!r} must be a number between 0 and 1.", field="min_score")
    if max_attempts is not None:
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise ConfigError(f"max_attempts={max_attempts!r} must be a whole number >= 1.", field="max_attempts")
        if min_score is None:
            raise ConfigError(
                "max_attempts= only matters with min_score= (the bar to re-sample for); set both.", field="max_attempts"
            )
        limits.check("attempts", max_attempts, "max_attempts", field="max_attempts")
    if not isinstance(diverse, bool):
        raise ConfigError(f"diverse={diverse!r} must be True or False.", field="diverse")
    if best_of is None and min_score is None:
        if diverse:
            raise ConfigError("diverse=True chooses among candidates: also pass best_of=N.", field="diverse")
        return None
    if isinstance(seed, (list, tuple)):
        raise ConfigError(
            "with best_of/min_score pass one int seed: candidate seeds are derived from it.", field="seed"
        )
    from .scoring.loop import Policy

    return Policy(
        n=n,
        per_attempt=best_of or n,
        min_score=min_score,
        max_attempts=max_attempts or (4 if min_score is not None else 1),
        diverse=diverse,
    )

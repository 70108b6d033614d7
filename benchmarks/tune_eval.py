"""Does tuning from ratings work? Base vs tuned on held-out prompts x seeds, with simulated teams whose rules
are measurable, judged by that rule and by the scorer (taste included, learned from the same ratings).

    python -m benchmarks.tune_eval [--part text|gan|both] [--candidates 24] [--pairs 200] [--epochs 1]
                                   [--seeds 4] [--train-faces 300] [--held-out-faces 300] [--json FILE]

- text: the team likes texts about the sea and dislikes texts about money (word lists below). The base
  SmolLM2 pack writes candidates for training prompts, the rule rates them (thumbs into a library),
  `aigc.tuning` trains a DPO LoRA adapter on the pairs, and base and tuned answer held-out prompts with the
  same seeds. Reported: mean rule score, mean scorer score (with taste), the tuned model's win rate over the
  base per comparison with a 95% Wilson interval, and the collapse guard: fluency (the scorer's quality) and
  distinct-2 over all outputs.
- gan: the team likes faces the image classifier sees with sunglasses (in its top 5). Faces of training seeds
  are rated by the rule, a latent prior is fitted, and held-out seeds are drawn with and without it.
  Reported: the share of rule-satisfying faces (95% Wilson interval) and its ratio, image quality, and
  diversity (mean pairwise cosine distance of the classifier's features).

A benchmark, not a test: it measures, and says where tuning does not help.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SEA = {
    "sea",
    "seas",
    "ocean",
    "oceans",
    "beach",
    "beaches",
    "wave",
    "waves",
    "coast",
    "shore",
    "tide",
    "tides",
    "sail",
    "sailing",
    "boat",
    "boats",
    "island",
    "islands",
    "surf",
    "seaside",
    "harbor",
    "harbour",
    "marine",
    "fish",
    "fishing",
    "swim",
    "swimming",
    "sand",
    "lighthouse",
    "salt",
}
MONEY = {
    "money",
    "cash",
    "bank",
    "banks",
    "rich",
    "dollar",
    "dollars",
    "price",
    "prices",
    "pay",
    "paid",
    "buy",
    "bought",
    "cost",
    "costs",
    "salary",
    "invest",
    "investing",
    "investment",
    "wealth",
    "budget",
    "profit",
    "savings",
    "save",
    "expensive",
    "cheap",
    "finance",
    "financial",
    "income",
    "debt",
    "loan",
    "shopping",
}
TRAIN_PROMPTS = [  # everyday prompts a model answers with a beach trip about as often as with money
    "Write one sentence about a perfect summer holiday.",
    "Write one sentence about what you would do if you won the lottery.",
    "Write one sentence about your dream retirement.",
    "Write one sentence about how you would spend a bonus.",
    "Write one sentence about a weekend trip.",
    "Write one sentence about the place you want to live.",
    "Write one sentence about a reward you would give yourself.",
    "Write one sentence about your plans for the summer.",
    "Write one sentence about a gift for a friend.",
    "Write one sentence about a day off.",
    "Write one sentence about starting a new life somewhere.",
    "Write one sentence about a family holiday.",
]
HELD_OUT_PROMPTS = [
    "Write one sentence about a long vacation.",
    "Write one sentence about what you would do with a free year.",
    "Write one sentence about a surprise for your parents.",
    "Write one sentence about a happy ending.",
    "Write one sentence about your next holiday.",
    "Write one sentence about a treat after a hard week.",
    "Write one sentence about a new home.",
    "Write one sentence about a summer job.",
]
SUNGLASSES = "sunglass"  # ImageNet has 'sunglasses' twice (classes 836 and 837)


def rule(text: str) -> int:
    """The simulated team: +1 per sea word, -1 per money word."""
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in SEA for w in words) - sum(w in MONEY for w in words)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(centre - half, 3), round(centre + half, 3))


def distinct_n(texts: list[str], n: int = 2) -> float:
    grams = [
        tuple(words[i : i + n]) for text in texts for words in [text.lower().split()] for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


# --- text --------------------------------------------------------------------------------------------------
def text_eval(args: argparse.Namespace, manager: Any, work: Path) -> dict[str, Any]:
    import aigc
    from aigc.scoring.library import Library
    from aigc.tuning import pairs as pair_sources
    from aigc.tuning.text_dpo import Settings, tune_text

    knobs = dict(max_new_tokens=args.max_new_tokens, temperature=1.0, manager=manager)
    start = time.perf_counter()
    candidates = aigc.generate("text", TRAIN_PROMPTS, n=args.candidates, seed=1, **knobs)
    library = Library(work / "team")
    for asset in candidates:
        if rule(asset.data):
            library.rate(asset, 1 if rule(asset.data) > 0 else -1, user="sim")
    found = pair_sources.from_ratings(library.ratings(), seed=0)
    pairs = found.pairs if len(found.pairs) <= args.pairs else random.Random(0).sample(found.pairs, args.pairs)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    adapter = tune_text(
        pairs,
        "pack:smollm2",
        work / "adapter",
        Settings(epochs=args.epochs, seed=0, batch_size=4, max_length=128, save_every=1000),
        data={"benchmark": "tune_eval"},
    )
    trained = time.perf_counter() - start
    seeds = list(range(100, 100 + args.seeds))
    rows: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[list[Any]]] = {}
    for name, model in (("base", "pack:smollm2"), ("tuned", str(adapter))):
        outputs[name] = [
            aigc.generate("text", prompt, model=model, n=len(seeds), seed=seeds[0], **knobs)
            for prompt in HELD_OUT_PROMPTS
        ]
    judged = {
        name: [
            aigc.score(group, prompt, library=library, manager=manager)
            for group, prompt in zip(outputs[name], HELD_OUT_PROMPTS, strict=True)
        ]
        for name in outputs
    }
    for name in outputs:
        texts = [a.data for group in outputs[name] for a in group]
        scores = [s for group in judged[name] for s in group]
        rows[name] = {
            "rule": round(float(np.mean([rule(t) for t in texts])), 3),
            "sea_share": round(float(np.mean([rule(t) > 0 for t in texts])), 3),
            "money_share": round(float(np.mean([rule(t) < 0 for t in texts])), 3),
            "score": round(float(np.mean([s["score"] for s in scores])), 3),
            "taste": _mean(s.get("taste") for s in scores),
            "fluency": _mean(s.get("quality") for s in scores),
            "distinct2": round(distinct_n(texts), 3),
        }
    comparisons = {"rule": [], "score": []}
    for base_group, tuned_group, base_scores, tuned_scores in zip(
        outputs["base"], outputs["tuned"], judged["base"], judged["tuned"], strict=True
    ):
        for b, t, bs, ts in zip(base_group, tuned_group, base_scores, tuned_scores, strict=True):
            comparisons["rule"].append(_win(rule(t.data), rule(b.data)))
            comparisons["score"].append(_win(ts["score"], bs["score"]))
    wins = {
        judge: {
            "win_rate": round(float(np.mean(v)), 3),
            "ci95": wilson(sum(v), len(v)),
            "n": len(v),
            "ties": int(sum(x == 0.5 for x in v)),
        }
        for judge, v in comparisons.items()
    }
    return {
        "ratings": len(library.ratings()),
        "pairs": len(pairs),
        "sources": pair_sources.Found(pairs).counts(),
        "taste_model": _taste_model(library),
        "candidates_s": round(prepared, 1),
        "train_s": round(trained, 1),
        "rows": rows,
        "wins": wins,
        "examples": {name: [g[0].data for g in outputs[name][:3]] for name in outputs},
    }


def _taste_model(library: Any) -> dict[str, Any] | None:
    """Whether the scorer's taste model (scoring/taste.py) joined the judging, and why (or why not)."""
    ratings = library.ratings()
    if not ratings or not hasattr(library, "taste"):
        return None
    model = library.taste(ratings[0].item.space)
    return None if model is None else {"used": model.used, "accuracy": model.accuracy, "reason": model.reason}


def _win(tuned: float, base: float) -> float:
    return 1.0 if tuned > base else 0.0 if tuned < base else 0.5


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 3) if values else None


# --- gan ---------------------------------------------------------------------------------------------------
def gan_eval(args: argparse.Namespace, manager: Any, work: Path) -> dict[str, Any]:
    import aigc
    from aigc.media.latent_prior import save_prior
    from aigc.scoring.library import Library
    from aigc.scoring.vision import ImageClassifier, imagenet_labels
    from aigc.tuning.gan_prior import fit_prior, latents_from_ratings

    classes = [i for i, label in enumerate(imagenet_labels()) if SUNGLASSES in label.lower()]
    classifier = ImageClassifier(manager)

    def sees_glasses(assets: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        probs, features = classifier.predict([a.data for a in assets])
        top5 = np.argsort(probs, axis=1)[:, ::-1][:, :5]
        return np.isin(top5, classes).any(axis=1), features

    start = time.perf_counter()
    faces = aigc.generate("image", "a portrait", backend="gan", n=args.train_faces, seed=0, manager=manager)
    liked, _ = sees_glasses(faces)
    library = Library(work / "faces")
    for asset, good in zip(faces, liked, strict=True):
        library.rate(asset, 1 if good else -1, user="sim")
    prior = fit_prior(latents_from_ratings(library.ratings()), data={"benchmark": "tune_eval"})
    path = save_prior(prior, work / "glasses.safetensors")
    fitted = time.perf_counter() - start
    rows = {}
    for name, extra in (("base", {}), ("prior", {"prior": str(path)})):
        held = aigc.generate(
            "image", "a portrait", backend="gan", n=args.held_out_faces, seed=100_000, manager=manager, **extra
        )
        glasses, features = sees_glasses(held)
        scores = aigc.score(held, "a portrait", library=library, manager=manager)
        similarity = features @ features.T
        off_diagonal = similarity[~np.eye(len(held), dtype=bool)]
        rows[name] = {
            "glasses_share": round(float(glasses.mean()), 3),
            "ci95": wilson(glasses.sum(), len(held)),
            "quality": _mean(s.get("quality") for s in scores),
            "taste": _mean(s.get("taste") for s in scores),
            "diversity": round(float(np.mean(1 - off_diagonal)), 4),
        }
    ratio = rows["prior"]["glasses_share"] / max(rows["base"]["glasses_share"], 1e-9)
    return {
        "train_faces": args.train_faces,
        "liked": int(liked.sum()),
        "fit_s": round(fitted, 1),
        "taste_model": _taste_model(library),
        "prior": {k: prior.record[k] for k in ("accuracy", "C", "shift")},
        "rows": rows,
        "ratio": round(ratio, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("text", "gan", "both"), default="both")
    parser.add_argument("--candidates", type=int, default=24, help="base texts per training prompt (12 prompts)")
    parser.add_argument("--pairs", type=int, default=200, help="most preference pairs to train on")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=4, help="seeds per held-out prompt (8 prompts)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--train-faces", type=int, default=300)
    parser.add_argument("--held-out-faces", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from aigc.runtime.devices import DeviceManager

    # float32 for both sides: a tuned adapter is merged into float weights, so the base must not decode packed
    # int4 with bf16 activations (what the CPU default does for the pack) or precision would differ, not tuning
    manager = DeviceManager(args.device, "float32")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aigc-tune-eval-") as work:
        if args.part in ("gan", "both"):
            results["gan"] = gan_eval(args, manager, Path(work))
            print(json.dumps({"gan": results["gan"]}, indent=1), flush=True)
        if args.part in ("text", "both"):
            results["text"] = text_eval(args, manager, Path(work))
            print(json.dumps({"text": results["text"]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

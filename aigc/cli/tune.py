"""`aigc tune`: train a generator toward the team's ratings (a LoRA adapter for text, a latent prior for the GAN).

Kept apart from main.py so `aigc --help` stays light: everything heavy is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

TUNE_EXAMPLES = """
\b
Examples:
  aigc tune text --from team-library/ --out adapters/sea --steps 60 --seed 1
  aigc generate text "Write about your weekend" --model adapters/sea
  aigc generate text "Write about your weekend" --adapter adapters/sea      # the same, on its base model
  aigc tune image --backend gan --from team-library/ --out priors/glasses.safetensors
  aigc generate image "portrait" -n 8 --seed 1 --prior priors/glasses.safetensors
"""


@click.group(epilog=TUNE_EXAMPLES)
def tune() -> None:
    """Tune a generator toward what the team rated up (thumbs and "A over B" choices in a library).

    The result is a file or folder you pass back to `aigc generate`: the base model is never changed.
    """


@tune.command(epilog=TUNE_EXAMPLES)
@click.option(
    "--from",
    "library_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The team library whose ratings to learn from (the folder of `aigc rate`).",
)
@click.option(
    "--model",
    "-m",
    help="The base text model to tune (Hub id, local dir, .gguf or pack:NAME). Default: "
    "the text backend's default, the SmolLM2 pack.",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Adapter folder to write; re-running the same command resumes from its checkpoints.",
)
@click.option(
    "--candidates",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Also pair best against worst of saved best_of candidates (a folder of `aigc generate text "
    "... --best-of 8 -n 8 --out DIR`); repeatable.",
)
@click.option("--user", help="Only this user's ratings (default: everyone's, the team's taste).")
@click.option("--steps", type=int, help="Training steps (default: --epochs over the pairs).")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over the pairs, without --steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the adapter's init and the data order.")
@click.option("--learning-rate", type=float, default=5e-4, show_default=True, help="AdamW learning rate.")
@click.option(
    "--beta",
    type=float,
    default=0.1,
    show_default=True,
    help="DPO's beta: higher keeps the tuned model closer to the base.",
)
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank (adapter size).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Pairs per step.")
@click.option("--max-length", type=int, default=256, show_default=True, help="Tokens of prompt + answer kept.")
@click.option("--save-every", type=int, default=10, show_default=True, help="Steps between checkpoints.")
@click.option("--fresh", is_flag=True, help="Ignore checkpoints (and a finished adapter) in --out; start over.")
def text(
    library_path: Path,
    model: str,
    out: Path,
    candidates: tuple[Path, ...],
    user: str | None,
    steps: int | None,
    epochs: float,
    seed: int,
    learning_rate: float,
    beta: float,
    rank: int,
    batch_size: int,
    max_length: int,
    save_every: int,
    fresh: bool,
) -> None:
    """Fine-tune a text model on the team's ratings with DPO, as a LoRA adapter (TRL + PEFT).

    Pairs come from "A over B" choices, liked vs disliked texts (same prompt first, then any), and best vs
    worst of saved best_of candidates. Shows a progress bar; checkpoints every --save-every steps.
    """
    from ..tuning import pairs as pair_sources
    from ..tuning.text_dpo import Settings, require_tune_packages, tune_text

    require_tune_packages()
    settings = Settings(steps, epochs, seed, learning_rate, beta, rank, batch_size, max_length, save_every)
    settings.check()
    library = _library(library_path)
    found = pair_sources.from_ratings(library.ratings(user), seed=seed)
    for folder in candidates:
        found.pairs += pair_sources.best_vs_worst(pair_sources.saved_candidates(folder))
    counts = found.counts()
    click.echo(
        f"{len(found.pairs)} preference pairs ({', '.join(f'{n} {k}' for k, n in counts.items()) or 'none'})"
        + _skipped(found),
        err=True,
    )
    data = {"library": str(library.path), "user": user, "sources": counts, "candidates": [str(c) for c in candidates]}
    adapter = tune_text(found.pairs, model or _default_model("text", "lm"), out, settings, data=data, fresh=fresh)
    click.echo(f"adapter written to {adapter}; use it with --model {adapter} (or --adapter {adapter})")


@tune.command(epilog=TUNE_EXAMPLES)
@click.option(
    "--backend",
    "-b",
    type=click.Choice(["gan"]),
    required=True,
    help="The image generator to tune; the GAN's latent prior is what can be learned offline.",
)
@click.option(
    "--from",
    "library_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The team library whose ratings of GAN images to learn from.",
)
@click.option("--model", "-m", help="The GAN the images came from. Default: the gan backend's, the face pack.")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="The prior file to write: .safetensors or .json.",
)
@click.option("--user", help="Only this user's ratings (default: everyone's).")
@click.option(
    "--strength",
    type=float,
    default=1.0,
    show_default=True,
    help="How far to lean toward the liked latents (0 = the plain GAN, 2 = twice as far).",
)
def image(backend: str, library_path: Path, model: str, out: Path, user: str | None, strength: float) -> None:
    """Fit a latent prior for the GAN from rated GAN images (their seeds give their latents).

    Generate with it through the gan knob --prior FILE: the same seed and prior give the same image.
    """
    from ..media.latent_prior import save_prior
    from ..tuning.gan_prior import fit_prior, latents_from_ratings

    library = _library(library_path)
    rated = latents_from_ratings(library.ratings(user), model or _default_model("image", backend))
    prior = fit_prior(rated, strength=strength, data={"library": str(library.path), "user": user})
    path = save_prior(prior, out)
    record = prior.record
    click.echo(
        f"prior written to {path}: {record['liked']} liked and {record['disliked']} disliked latents, "
        f"held-out accuracy {record['accuracy']:.2f}, shift {record['shift']:.2f}; use it with --prior {path}"
    )


def _default_model(kind: str, backend: str) -> str:
    from ..runtime import registry

    return str(registry.get(kind, backend).default_model)


def _library(path: Path):
    from ..errors import ConfigError
    from ..scoring.library import Library

    if not path.is_dir():
        raise ConfigError(f"--from {path}: no such library folder (the folder you rate into).", field="from")
    return Library(path)


def _skipped(found) -> str:
    parts = []
    if found.no_text:
        parts.append(f"{found.no_text} rated texts without their text (rated before ratings kept it)")
    if found.no_prompt:
        parts.append(f"{found.no_prompt} without a prompt")
    return f"; skipped {', '.join(parts)}" if parts else ""

"""`aigc rate` and `aigc taste`: people's ratings from the command line, and what the team's taste model learned
from them. Heavy imports stay inside the commands, so `aigc --help` loads no model code."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError

SHOWN_CHARS = 800  # of a text shown inline in --pairs
KEYS = ("1", "2", "s", "q")

RATE_EXAMPLES = """
\b
Examples:
  aigc rate out/story-1.txt out/story-4.txt --up      # thumbs up (latest rating of yours counts)
  aigc rate faces/face-3.png --down --note "eyes melt"
  aigc rate --prefer faces/face-1.png faces/face-7.png  # the first is better
  aigc rate --pairs shoot/                             # choose between pairs of a batch or run
  aigc rate --pairs runs/glass --user ann --library team-library/
"""


def _library(path: Path | None, user: str | None = None) -> Any:
    from ..scoring.library import Library

    return Library(path, taste_user=user)


def _user(user: str | None) -> str:
    from ..scoring.ratings import checked_user

    return checked_user(user)


def _item(path: Path) -> Any:
    """An aigc asset as an Asset (its prompt and origin come along); any other text, image or audio file as data."""
    from ..errors import NoMetadataError
    from ..media.assets import load, read_media

    if path.is_dir():
        raise ConfigError(f"{path} is a directory; rate files (or use --pairs {path}).")
    try:
        return load(path)
    except NoMetadataError:
        return read_media(path)[1]


@click.command(epilog=RATE_EXAMPLES)
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--up", is_flag=True, help="Thumbs up on FILES.")
@click.option("--down", is_flag=True, help="Thumbs down on FILES.")
@click.option("--undo", is_flag=True, help="Take your thumb on FILES back.")
@click.option(
    "--prefer",
    nargs=2,
    type=click.Path(path_type=Path),
    metavar="BETTER WORSE",
    help="Record that BETTER was chosen over WORSE (two files of one kind).",
)
@click.option(
    "--pairs",
    "pairs_dir",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Choose between pairs of a batch or run directory, one pair at a time (keys 1, 2, s, q).",
)
@click.option("--rounds", type=click.IntRange(1, 10_000), help="With --pairs: stop after this many pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --pairs: the order pairs come in.")
@click.option("--no-open", is_flag=True, help="With --pairs: print image and audio paths instead of opening them.")
@click.option("--note", help="A note kept with the rating (why).")
@click.option("--user", help="Whose rating this is (default: $AIGC_USER, else your login name).")
@click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=Path),
    help="The team library the ratings go to (default: $AIGC_LIBRARY or the user data dir).",
)
def rate(
    files: tuple[Path, ...],
    up: bool,
    down: bool,
    undo: bool,
    prefer: tuple[Path, Path] | None,
    pairs_dir: Path | None,
    rounds: int | None,
    seed: int,
    no_open: bool,
    note: str | None,
    user: str | None,
    library_path: Path | None,
) -> None:
    """Rate assets for the team's taste: thumbs up or down, or which of two is better.

    Ratings are kept with the team library (ratings.jsonl beside library.jsonl) and teach the taste model
    the scorer adds as its fourth part once there are enough of them (see `aigc taste`).
    """
    modes = [
        name
        for name, on in (
            ("--up", up),
            ("--down", down),
            ("--undo", undo),
            ("--prefer", bool(prefer)),
            ("--pairs", pairs_dir is not None),
        )
        if on
    ]
    if len(modes) != 1:
        raise ConfigError(
            "say one of --up, --down or --undo (with FILES), --prefer BETTER WORSE or --pairs DIR"
            + (f", not {' and '.join(modes)}" if modes else "")
            + "."
        )
    if files and modes[0] in ("--prefer", "--pairs"):
        raise ConfigError(f"{modes[0]} takes no other FILES ({files[0]}...); rate them with --up or --down.")
    if not files and modes[0] in ("--up", "--down", "--undo"):
        raise ConfigError(f"{modes[0]} needs the FILES to rate, e.g. aigc rate out/a.png {modes[0]}.")
    who = _user(user)
    library = _library(library_path)
    if pairs_dir is not None:
        return _pair_session(library, pairs_dir, who, note, rounds, seed, not no_open)
    if prefer:
        better, worse = prefer
        if better.resolve() == worse.resolve():
            raise ConfigError(f"--prefer needs two different files, not {better} twice.")
        items = [_item(better), _item(worse)]
        library.prefer(*items, user=who, note=note, refs=(str(better), str(worse)), scorer=_scorer())
        click.echo(f"{better}  over  {worse}  ({who}; {_count(library)})")
        return None
    value = 1 if up else -1 if down else 0
    items = [_item(path) for path in files]  # every file read before the first rating is written
    for path, item in zip(files, items, strict=True):
        library.rate(item, value, user=who, note=note, ref=str(path), scorer=_scorer())
        click.echo(f"{('up', 'down', 'taken back')[(1, -1, 0).index(value)]:>10}  {path}")
    click.echo(f"({who}; {_count(library)})")
    return None


def _scorer() -> Any:
    from ..scoring.scorer import default_scorer

    return default_scorer()


def _count(library: Any) -> str:
    return f"{len(library.ratings())} ratings in {library.path}"


# --- aigc rate --pairs: an interactive session ------------------------------------------------------------
def _pair_files(directory: Path) -> list[Path]:
    """The assets of a batch (manifest.jsonl), a run (run.json) or, failing both, every media file in DIR."""
    from ..media.formats import for_path
    from ..media.sheets import is_contact_sheet
    from ..orchestration.batch import Manifest

    if not directory.is_dir():
        raise ConfigError(f"--pairs {directory}: not a directory; pass a batch or run directory.", field="pairs")
    names: list[str] = []
    if (directory / "manifest.jsonl").is_file():
        names = [record["file"] for record in Manifest(directory).records()]
    elif (directory / "run.json").is_file():
        try:
            run = json.loads((directory / "run.json").read_text(encoding="utf-8"))
            names = [a["file"] for step in run["steps"] for a in step["assets"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"--pairs {directory}: its run.json is not one `aigc run` wrote.") from None
    else:
        for path in sorted(directory.iterdir()):
            try:
                if (
                    path.is_file()
                    and not path.name.startswith(".")
                    and path.suffix != ".json"
                    and for_path(path)
                    and not is_contact_sheet(path)
                ):  # `aigc generate -n` leaves a sheet beside its images
                    names.append(path.name)
            except ConfigError:
                continue
    paths = [directory / Path(name).name for name in dict.fromkeys(names)]
    return [path for path in paths if path.is_file()]


def _pairs_by_kind(paths: list[Path]) -> list[list[Path]]:
    from ..media.formats import for_path

    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(for_path(path).kind, []).append(path)
    return [group for group in groups.values() if len(group) > 1]


def _next_pair(
    groups: list[list[Path]], shown: dict[Path, int], done: set[frozenset], rng: random.Random
) -> tuple[Path, Path] | None:
    """The least-shown file, against the least-shown file of its kind it has not met yet (random among ties):
    every file gets compared before any file is compared twice, and no pair comes twice."""
    options = []
    for group in groups:
        for a in group:
            partners = [b for b in group if b != a and frozenset((a, b)) not in done]
            if partners:
                options.append((shown[a], rng.random(), a, partners))
    if not options:
        return None
    _, _, first, partners = min(options, key=lambda option: option[:2])
    fewest = min(shown[b] for b in partners)
    second = rng.choice([b for b in partners if shown[b] == fewest])
    return (first, second) if rng.random() < 0.5 else (second, first)


def _pair_session(
    library: Any, directory: Path, user: str, note: str | None, rounds: int | None, seed: int, open_files: bool
) -> None:
    from ..scoring.ratings import content_key
    from ..scoring.scorer import as_item

    groups = _pairs_by_kind(_pair_files(directory))
    if not groups:
        raise ConfigError(f"--pairs {directory}: it holds no two assets of one kind to compare.", field="pairs")
    earlier = {frozenset((r.item.key, r.other.key)) for r in library.ratings(user) if r.other is not None}
    shown = {path: 0 for group in groups for path in group}
    done: set[frozenset] = set()
    keys: dict[Path, str] = {}
    items: dict[Path, Any] = {}
    rng = random.Random(seed)
    recorded = skipped = 0
    click.echo(
        f"Which is better? Type 1 or 2 (then Enter), s to skip, q to quit. Choices go to {library.path} as {user}."
    )
    while rounds is None or recorded + skipped < rounds:
        pair = _next_pair(groups, shown, done, rng)
        if pair is None:
            click.echo("every pair has been seen.")
            break
        done.add(frozenset(pair))
        for path in pair:
            if path not in items:
                items[path] = _item(path)
                thing = as_item(items[path])
                keys[path] = content_key(thing.kind, thing.data)
        if frozenset(keys[p] for p in pair) in earlier or keys[pair[0]] == keys[pair[1]]:
            continue  # chosen before (by this user, in this library), or the same content twice
        for path in pair:
            shown[path] += 1
        answer = _ask(pair, items, recorded + skipped + 1, open_files)
        if answer == "q":
            break
        if answer == "s":
            skipped += 1
            continue
        better, worse = pair if answer == "1" else pair[::-1]
        library.prefer(
            items[better], items[worse], user=user, note=note, refs=(str(better), str(worse)), scorer=_scorer()
        )
        earlier.add(frozenset((keys[better], keys[worse])))
        recorded += 1
    click.echo(
        f"recorded {recorded} choice(s), skipped {skipped}; {_count(library)}. `aigc taste --library "
        f"{library.path}` shows what the team's taste model learned."
    )


def _ask(pair: tuple[Path, Path], items: dict[Path, Any], number: int, open_files: bool) -> str:
    from ..checks import printable

    click.echo(f"\npair {number}:")
    for mark, path in zip("12", pair, strict=True):
        item = items[path]
        text = item if isinstance(item, str) else item.data if getattr(item, "kind", None) == "text" else None
        if isinstance(text, str):
            shown = printable(text)
            shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "..."
            click.echo(f"  [{mark}] {path}\n      " + "\n      ".join(shown.splitlines() or [""]))
        else:
            click.echo(f"  [{mark}] {path}{_opened(path) if open_files else ''}")
    try:
        return click.prompt("better", type=click.Choice(KEYS), show_choices=True)
    except click.exceptions.Abort:  # end of input (or Ctrl-D): the choices made so far are kept
        return "q"


def _opened(path: Path) -> str:
    """Show an image or clip with the system's viewer, without waiting for it; say so, or say to open it."""
    viewer = "open" if sys.platform == "darwin" else "xdg-open"
    if not shutil.which(viewer):
        return "  (no viewer found: open it yourself)"
    subprocess.Popen([viewer, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"  (opened with {viewer})"


# --- aigc taste --------------------------------------------------------------------------------------------
@click.command()
@click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=Path),
    help="The team library (default: $AIGC_LIBRARY or the user data dir).",
)
@click.option("--user", help="One person's taste (default: the whole team's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def taste(library_path: Path | None, user: str | None, as_json: bool) -> None:
    """What the team's taste model learned from its ratings: per embedding space, whether it is fitted, how
    often it predicts held-out ratings right (cross-validated, with a 95% interval) and whether the scorer
    uses it (only when it beats chance).

    \b
    Examples:
      aigc taste --library team-library/
      aigc taste --user ann --json
    """
    from dataclasses import asdict

    from ..scoring.taste import MIN_RATINGS

    library = _library(library_path, user)
    ratings = library.ratings(library.taste_user)
    thumbs = [r for r in ratings if r.type == "thumb"]
    summary = {
        "library": str(library.path),
        "user": library.taste_user,
        "ratings": len(ratings),
        "thumbs_up": sum(r.value > 0 for r in thumbs),
        "thumbs_down": sum(r.value < 0 for r in thumbs),
        "choices": len(ratings) - len(thumbs),
        "users": len({r.user for r in ratings}),
        "min_ratings": MIN_RATINGS,
    }
    models = library.tastes()
    if as_json:
        spaces = [{k: v for k, v in asdict(m).items() if k not in ("mean", "scale", "coef")} for m in models]
        click.echo(json.dumps({**summary, "spaces": spaces}))
        return
    whose = f"{user}'s" if user else "the team's"
    click.echo(
        f"{library.path}: {summary['ratings']} ratings for {whose} taste ({summary['thumbs_up']} up, "
        f"{summary['thumbs_down']} down, {summary['choices']} choices; {summary['users']} user(s))"
    )
    if not models:
        click.echo(
            f"  nothing rated yet: `aigc rate FILE --up` or `aigc rate --pairs DIR` (a model needs "
            f"{MIN_RATINGS} ratings of one kind)"
        )
    for model in models:
        click.echo(
            f"  {model.space}: {'USED' if model.used else 'not used'}, {model.thumbs} thumbs + "
            f"{model.pairs} choices; {model.reason}"
        )
        if model.held_out:
            h = model.held_out
            click.echo(
                f"      held-out accuracy {h.accuracy:.0%} (95% CI {h.low:.0%}-{h.high:.0%}, {h.correct}/{h.n}; "
                f"chance {h.chance:.0%}, p = {h.p_value:.2g})" + (f", C = {model.c:g}" if model.c else "")
            )

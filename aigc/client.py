"""aigc.Client: the module's verbs (generate, run, batch, score) done by an `aigc serve`, with the same arguments and
results here: real Assets, run directories and batch directories. httpx loads on first use, so `import aigc`
stays light."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence, Set
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from . import errors, seeds
from .errors import AIGCError, ConfigError, GenerationError
from .media import formats
from .media.assets import Asset
from .orchestration.batch import ROW_KEYS, Manifest, Row, Summary, read_prompts
from .orchestration.recipes import default_out
from .records import Progress
from .storage import locked_dir, path_arg, read_bytes, read_text, sha256_file, writable_dir, write_atomic

ENDED = ("done", "failed", "cancelled")
RECONNECTS = 5  # times a dropped event stream is reopened (Last-Event-ID: nothing is missed) before giving up
INLINE = "the inline recipe"  # what the server calls a recipe sent as YAML, in its errors


class Client:
    """An aigc server's verbs, called like the module's: `aigc.Client("http://gpu-box:8000").generate("text", ...)`.

    `url` defaults to $AIGC_SERVER and `token` to $AIGC_TOKEN; `timeout` is how long one request may wait for
    the server (a job may take longer: its event stream keeps the wait alive).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 600) -> None:
        try:
            import httpx
        except ImportError:
            raise ConfigError("aigc.Client needs httpx: pip install httpx") from None
        self.url = _server_url(url if url is not None else os.environ.get("AIGC_SERVER"))
        self.token = token if token is not None else os.environ.get("AIGC_TOKEN") or None
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._origins: dict[int, tuple[weakref.ref, str]] = {}  # id(Asset) -> (the Asset, its id on this server)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the token

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the verbs ------------------------------------------------------------------------------------------
    def generate(
        self,
        kind: str,
        prompt: str | Sequence[str],
        *,
        backend: str | None = None,
        model: str | None = None,
        n: int | None = 1,
        seed: int | None = None,
        best_of: int | None = None,
        min_score: float | None = None,
        max_attempts: int | None = None,
        diverse: bool = False,
        library: bool = False,
        progress: Callable[[Progress], None] | None = None,
        **knobs: Any,
    ) -> list[Asset]:
        """aigc.generate on the server: the same outputs for the same seeds, as Assets here (data, record, save()).

        `model` is a name the server knows (a pack, a Hub id, a model of its --models directory), `library=True`
        its team library. An image knob (init_image) takes a PIL image, a file here or an Asset; `streamer=`
        gets the text as it is made.
        """
        if not isinstance(library, bool):
            raise ConfigError(
                f"library={library!r}: over a server it is True (the server's team library) or False.", field="library"
            )
        streamer = knobs.pop("streamer", None)
        listed = not isinstance(prompt, str) and isinstance(prompt, Sequence)
        body = {
            "kind": kind,
            "prompt": list(prompt) if listed else prompt,
            "backend": backend,
            "model": model,
            "n": 1 if n is None else n,
            "seed": seed,
            "best_of": best_of,
            "min_score": min_score,
            "max_attempts": max_attempts,
            "diverse": diverse,
            "library": library,
            "stream": streamer is not None,
            "params": self._params(kind, knobs),
        }
        view = self._ended(self._wait(self._submit(body), progress, streamer))
        return [self._asset(entry) for entry in view["assets"]]

    def run(
        self,
        recipe: str | os.PathLike,
        out: str | os.PathLike | None = None,
        *,
        seed: int | None = None,
        sets: Mapping[str, str] | None = None,
        progress: Callable[[Progress], None] | None = None,
        **inputs: str,
    ) -> Path:
        """A workflow run on the server, its run directory mirrored into `out` (default: a new runs/<recipe>-<seed>,
        as `aigc run` picks); returns its run.json, as aigc.orchestration.recipes.run_to_dir does.

        `recipe` is a YAML file here (sent inline) or the name of one of the server's pipelines; `sets` are
        `aigc run --set` pairs (an input, or step.knob=VALUE). The same call with an `out` again resumes: it finds
        the same job (and its seed). Without a seed and an `out`, a fresh seed makes a new run, as `aigc run` does.
        """
        body, stem, shown = _recipe(recipe)
        if out is None:
            seed = seeds.chosen(seed)
            place = default_out(stem, seed)
        else:
            place = path_arg(out, "out", field="out")
        body.update(type="run", inputs=dict(inputs), set=dict(sets or {}), seed=seed)
        out = writable_dir(place)
        try:
            view = self._ended(self._wait(self._submit(body, resume=True), progress))
        except AIGCError as error:
            raise _reworded(error, INLINE, shown) if shown else error from None
        with locked_dir(out, "workflow run") as out:
            self._mirror(view["id"], out)
        if not (out / "run.json").is_file():
            raise GenerationError(f"the server's run (job {view['id']}) has no run.json; its files are in {out}.")
        return out / "run.json"

    def batch(
        self,
        prompts: str | os.PathLike,
        out: str | os.PathLike,
        *,
        kind: str,
        n: int = 1,
        seed: int | None = None,
        backend: str | None = None,
        model: str | None = None,
        best_of: int | None = None,
        min_score: float | None = None,
        max_attempts: int | None = None,
        progress: Callable[[Progress], None] | None = None,
        **knobs: Any,
    ) -> Summary:
        """aigc.batch on the server: the prompts file is read here (the same reader: .txt, .csv, .jsonl), its rows
        made there with the same seeds and file names, and the batch directory mirrored into `out`.

        Returns the Summary aigc.batch returns, rebuilt from the manifest: assets whose files were already in
        `out` (the same call again) count as skipped. Rows the server is given keep their file's numbers (a
        number is part of each asset's seed and file name), so gaps are sent as empty placeholder rows.
        """
        rows = read_prompts(path_arg(prompts, "prompts"))
        out = writable_dir(path_arg(out, "out", field="out"))
        wire, reasons = numbered_rows(rows, kind, backend)
        body = {
            "type": "batch",
            "kind": kind,
            "rows": wire,
            "n": n,
            "seed": seed,
            "backend": backend,
            "model": model,
            "best_of": best_of,
            "min_score": min_score,
            "max_attempts": max_attempts,
            "params": self._params(kind, knobs),
        }
        view = self._wait(self._submit(body, resume=True), progress)
        if (view.get("error") or {}).get("type") != "BatchFailed":  # every row failing is a summary, not an error
            self._ended(view)
        with locked_dir(out, "batch") as out:
            listed, fresh = self._mirror(view["id"], out, skip={"failures.jsonl"})
            failed = self._failures(view["id"], listed, {row.number for row in rows}, reasons)
            if failed:
                write_atomic(
                    out / "failures.jsonl",
                    "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failed).encode("utf-8"),
                )
            manifest = Manifest(out)
            records = manifest.records()
        made = sum(record["file"] in fresh for record in records)
        return Summary(made=made, skipped=len(records) - made, failed=failed, malformed=len(manifest.skipped))

    def score(
        self,
        items: Sequence[Any],
        prompt: str | None = None,
        *,
        library: bool = False,
        weights: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """aigc.score on the server's scorer (and, with library=True, its team library): one dict per item.

        An Asset from this server is sent as its id; anything else as text or a data URL (audio as 16-bit WAV).
        """
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise ConfigError(f"items must be a list of things to score, not a {type(items).__name__}; e.g. [text].")
        body = {
            "items": [self._item(thing) for thing in items],
            "prompt": prompt,
            "library": library,
            "weights": weights,
        }
        return self._post("/v1/score", body).json()["scores"]

    # --- jobs -----------------------------------------------------------------------------------------------
    def _submit(self, body: dict[str, Any], *, resume: bool = False) -> dict[str, Any]:
        """POST a job. With `resume`, the same request again finds the job it made (an Idempotency-Key of the
        request), and a failed or cancelled one is retried: the local command's "run it again to resume"."""
        key = {"Idempotency-Key": "client-" + hashlib.sha256(_json_ready(body).encode()).hexdigest()} if resume else {}
        answer = self._post("/v1/jobs", body, key)
        job = answer.json()
        if resume and answer.status_code == 200 and job["state"] in ("failed", "cancelled"):
            job = self._request("POST", f"/v1/jobs/{job['id']}/retry").json()
        return job

    def _wait(
        self,
        job: Mapping[str, Any],
        progress: Callable[[Progress], None] | None = None,
        streamer: Callable[[str], Any] | None = None,
    ) -> dict[str, Any]:
        """Follow a job's events until it ends (passing on progress and streamed text), reopening a dropped
        stream after the last event seen; the job as it ended."""
        import httpx

        last, drops = None, 0
        while True:
            try:
                with closing(self._events(job["events"], last)) as events:
                    for event in events:
                        last, drops = event.get("id", last), 0
                        _dispatch(event, progress, streamer)
                        if event.get("event") in ENDED:
                            return self._job(job["id"])
            except httpx.TransportError as error:
                drops += 1
                if drops > RECONNECTS:
                    raise self._unreachable(error) from None
                time.sleep(min(2.0**drops, 10.0))
                continue
            view = self._job(job["id"])  # the stream closed without an end event: look, then listen again
            if view["state"] in ENDED:
                return view
            time.sleep(0.5)

    def _events(self, path: str, last: str | None) -> Generator[dict[str, Any], None, None]:
        headers = {"Last-Event-ID": last} if last is not None else {}
        with self._http.stream("GET", path, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise self._refused(response)
            yield from sse(response.iter_lines())

    def _job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def _ended(self, view: dict[str, Any]) -> dict[str, Any]:
        """The job's view if it is done; its own error (as the aigc error class it names) if it failed."""
        if view["state"] == "failed":
            raise error_of(view.get("error") or {})
        if view["state"] == "cancelled":
            raise GenerationError(
                f"job {view['id']} was cancelled on the server at {self.url}; POST "
                f"/v1/jobs/{view['id']}/retry resumes it."
            )
        return view

    # --- assets and files -----------------------------------------------------------------------------------
    def _asset(self, entry: Mapping[str, Any]) -> Asset:
        """A server's asset as a real Asset: its file's content decoded through the formats table, its record."""
        raw = self._request("GET", entry["url"]).content
        meta = self._request("GET", entry["meta"]).json()
        decoded = formats.decode(formats.by_media_type(meta["media_type"]), raw, f"asset {entry['id']}")
        asset = Asset.from_record(decoded.data, meta["record"])
        key = id(asset)
        self._origins[key] = (weakref.ref(asset, lambda _: self._origins.pop(key, None)), entry["id"])
        return asset

    def _origin(self, asset: Asset) -> str | None:
        """The id on this server of an Asset this client fetched (None for any other)."""
        ref, asset_id = self._origins.get(id(asset), (None, None))
        return asset_id if ref is not None and ref() is asset else None

    def _mirror(self, job_id: str, out: Path, skip: Set[str] = frozenset()) -> tuple[list[dict], set[str]]:
        """Copy a job's files into `out`, each checked against its sha256; a file already there with the same
        content is kept, one with other content is never overwritten. (The listing, the paths written now.)"""
        listed = self._request("GET", f"/v1/jobs/{job_id}/files").json()["files"]
        fresh = set()
        for entry in listed:
            if entry["path"] in skip:
                continue
            target = _inside(out, entry["path"])
            if target.is_file() and sha256_file(target) == entry["sha256"]:
                continue
            if target.exists():
                raise ConfigError(
                    f"{out} already holds {entry['path']} from another run or batch; pass a new "
                    "output directory, so nothing is overwritten.",
                    field="out",
                )
            write_atomic(target, self._file(job_id, entry))
            fresh.add(entry["path"])
        return listed, fresh

    def _file(self, job_id: str, entry: Mapping[str, Any]) -> bytes:
        data = self._request("GET", f"/v1/jobs/{job_id}/files/{quote(entry['path'])}").content
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise GenerationError(
                f"{entry['path']} arrived damaged from {self.url} (its sha256 differs); run the same command again."
            )
        return data

    def _failures(
        self, job_id: str, listed: list[dict], numbers: set[int], reasons: Mapping[int, str]
    ) -> list[dict[str, Any]]:
        """The batch's failures as a local batch reports them: placeholder rows left out, and rows refused here
        (unreadable JSON, a cell no knob reads) with the reason given here."""
        entry = next((e for e in listed if e["path"] == "failures.jsonl"), None)
        if entry is None:
            return []
        lines = self._file(job_id, entry).decode("utf-8").splitlines()
        failures = [json.loads(line) for line in lines if line.strip()]
        return [
            {**f, "reason": reasons.get(f.get("row"), f.get("reason"))} for f in failures if f.get("row") in numbers
        ]

    # --- what requests carry --------------------------------------------------------------------------------
    def _params(self, kind: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Knobs as JSON: an image knob's image as an asset id of this server's or a data URL, never a path."""
        images, controls = image_knobs(kind), image_knobs(kind, "controls")
        return {
            name: self._image(name, value)
            if name in images and value is not None
            else self._controls(name, value)
            if name in controls and value is not None
            else value
            for name, value in knobs.items()
        }

    def _controls(self, name: str, value: Any) -> Any:
        """ControlNet entries with each control image carried as an image knob's is (the model stays a name)."""
        from dataclasses import asdict

        from .generators.controls import Control

        entries = [value] if isinstance(value, (dict, Control)) else value
        if not isinstance(entries, (list, tuple)):
            return value
        carried = []
        for index, entry in enumerate(entries):
            entry = asdict(entry) if isinstance(entry, Control) else entry
            if isinstance(entry, dict) and entry.get("image") is not None:
                entry = {**entry, "image": self._image(f"{name}[{index}].image", entry["image"])}
            carried.append(entry)
        return carried

    def _image(self, name: str, value: Any) -> Any:
        if isinstance(value, (list, tuple)):  # a knob that takes several images (image_prompt)
            return [self._image(f"{name}[{index}]", item) for index, item in enumerate(value)]
        if isinstance(value, Asset):
            origin = self._origin(value)
            return {"asset": origin} if origin else data_url(value.to_bytes("png"), "image/png")
        if isinstance(value, str) and value.startswith("data:") or isinstance(value, dict):
            return value
        if isinstance(value, (str, os.PathLike)):
            path = path_arg(value, name, field=name)
            return data_url(read_bytes(path, name), formats.for_path(path, "image").media_type)
        if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
            return data_url(formats.encode("png", value, {}).data, "image/png")
        return value

    def _item(self, thing: Any) -> dict[str, Any]:
        """One score item: an asset id of this server's, a text, or a data URL (with an Asset's own prompt)."""
        if isinstance(thing, Asset):
            origin = self._origin(thing)
            if origin:
                return {"asset": origin}
            if thing.kind == "text":
                return {"text": thing.data, "prompt": thing.prompt}
            return {"data": data_url(thing.to_bytes(), formats.default(thing.kind).media_type), "prompt": thing.prompt}
        if isinstance(thing, str):
            return {"text": thing}
        if hasattr(thing, "convert") and hasattr(thing, "size"):
            return {"data": data_url(formats.encode("png", thing, {}).data, "image/png")}
        audio = _audio(thing)
        if audio is not None:
            return {"data": data_url(formats.encode("wav", audio, {}).data, "audio/wav")}
        raise ConfigError(f"cannot score a {type(thing).__name__}; pass Assets, str, PIL images or (samples, rate).")

    # --- answers --------------------------------------------------------------------------------------------
    def _post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Any:
        return self._request(
            "POST", path, content=_json_ready(body), headers={"Content-Type": "application/json", **(headers or {})}
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if response.status_code >= 400:
            raise self._refused(response)
        return response

    def _unreachable(self, error: Exception) -> AIGCError:
        import httpx

        if isinstance(error, httpx.TimeoutException):
            return GenerationError(
                f"the aigc server at {self.url} did not answer within {self.timeout:g} s; try again, "
                "or give the Client a longer timeout."
            )
        reason = "connection refused" if "refused" in str(error).lower() else _first_line(error)
        return ConfigError(
            f"cannot reach the aigc server at {self.url} ({reason}); start one with `aigc serve` or "
            "check --server / AIGC_SERVER.",
            field="server",
        )

    def _refused(self, response: Any) -> AIGCError:
        """An error answer as one line: the token, a missing job or asset, or the server's own typed error."""
        status = response.status_code
        if status == 401:
            why = "it did not accept the token" if self.token else "it needs a token"
            return ConfigError(
                f"the aigc server at {self.url} refused the request ({why}); pass --token TOKEN or set "
                "AIGC_TOKEN to your token from its --token-file.",
                field="token",
            )
        try:
            detail = response.json()["error"]
            message = str(detail["message"])
        except (ValueError, KeyError, TypeError):
            where = f"{response.request.method} {response.request.url.path}"
            return ConfigError(
                f"the server at {self.url} answered {status} {response.reason_phrase} to {where}; is it "
                "an aigc server (`aigc serve`)?",
                field="server",
            )
        if status == 404:
            return ConfigError(f"{message} on the aigc server at {self.url} (404).")
        return error_of(detail, fallback=ConfigError if status < 500 else GenerationError)


def error_of(detail: Mapping[str, Any], fallback: type[AIGCError] = GenerationError) -> AIGCError:
    """The error a server reported as the aigc error class it names. An HTTP error names it in `aigc_type` (its
    `type` is OpenAI's category, e.g. invalid_request_error); a job's stored error, in `type`."""
    cls = getattr(errors, str(detail.get("aigc_type") or detail.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, AIGCError)):
        cls = fallback
    message = str(detail.get("message") or "the server gave no reason")
    return cls(message, field=detail.get("field")) if issubclass(cls, ConfigError) else cls(message)


def sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from a stream's lines, as {"id", "event", "data"} (data read as JSON)."""
    event: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if line:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                data.append(value)
            elif key in ("id", "event"):
                event[key] = value
            continue
        if data or event:
            try:
                event["data"] = json.loads("\n".join(data)) if data else {}
            except ValueError:
                event["data"] = "\n".join(data)
            yield event
        event, data = {}, []


def numbered_rows(rows: list[Row], kind: str, backend: str | None) -> tuple[list[Any], dict[int, str]]:
    """A prompts file's rows as a batch job's rows, each at its own number (its line: part of its assets' seeds
    and file names), with an empty placeholder where the file has none; and, by number, the reason of each row
    refused here (as a local batch gives it), sent as a placeholder too."""
    by_number = {row.number: row for row in rows}
    wire: list[Any] = []
    reasons: dict[int, str] = {}
    for number in range(1, max(by_number) + 1):
        row = by_number.get(number)
        try:
            if row is not None and row.problem:
                raise ConfigError(row.problem)
            wire.append(typed_row(row, kind, backend) if row is not None else {})
        except ConfigError as error:
            reasons[number] = str(error)
            wire.append({})
    return wire, reasons


def typed_row(row: Row, kind: str, backend: str | None) -> dict[str, Any]:
    """A row's fields as JSON values: a CSV's cells read as their knobs' Params say (and seed, n as whole numbers
    where they are), as aigc.batch reads them; a JSONL row's values are already typed."""
    fields = dict(row.fields or {})
    if not row.textual or not fields.get("prompt"):
        return fields
    knobs = {k: v for k, v in fields.items() if k not in ROW_KEYS}
    whole: dict[str, Any] = {k: _whole(fields[k]) for k in ("seed", "n") if k in fields}
    return {**fields, **typed_knobs(kind, fields.get("backend", backend), knobs), **whole}


def typed_knobs(kind: str, backend: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """Knob values given as text (command-line options, CSV cells) read as their Params say, without resolving the
    model (it may be on the server only): the named backend's Param, else the kind's default backend's, else any
    of the kind's. A name no backend here declares passes as it is, for the server to judge."""
    from .runtime import registry

    declared = registry.knobs()
    first = registry.default_backend(kind) if kind in registry.kinds() else None
    typed = {}
    for name, value in given.items():
        params = sorted(
            ((spec, param) for spec, param in declared.get(name, []) if spec.kind == kind),
            key=lambda pair: (pair[0].name != backend, pair[0].name != first),
        )
        typed[name] = params[0][1].parse(name, value) if params else value
    return typed


def image_knobs(kind: str, param_type: str = "image") -> set[str]:
    """The knobs of `kind` that take an image (init_image, mask; with "controls", the ControlNet lists whose entries
    hold one), which travel as data URLs or asset ids."""
    from .runtime import registry

    return {
        name
        for name, declared in registry.knobs().items()
        if any(spec.kind == kind and param.type == param_type for spec, param in declared)
    }


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def _audio(thing: Any) -> Any:
    """Audio, or (samples, rate) as Audio; None for anything else."""
    from .media.audio import Audio

    if isinstance(thing, Audio):
        return thing
    if isinstance(thing, tuple) and len(thing) == 2 and isinstance(thing[1], int) and not isinstance(thing[1], bool):
        import numpy as np

        try:
            return Audio(np.asarray(thing[0], np.float32).reshape(-1), thing[1])
        except (TypeError, ValueError):
            raise ConfigError("audio samples must be numbers (an array of floats in [-1, 1]).") from None
    return None


def _recipe(recipe: Any) -> tuple[dict[str, Any], str, str | None]:
    """A run job's recipe: a YAML file here, sent inline; else the name of a server's pipeline. (The body's
    recipe part, the name a default run directory takes, the file's name for errors.)"""
    if not isinstance(recipe, (str, os.PathLike)):
        raise ConfigError(
            f"recipe must be a YAML file or a pipeline name (str), not {type(recipe).__name__}.", field="recipe"
        )
    path = path_arg(recipe, "recipe", field="recipe")
    if path.exists() or len(path.parts) > 1:
        return {"yaml": read_text(path, "recipe")}, path.stem, str(path)
    name = path.name.removesuffix(".yaml")
    return {"recipe": name}, name, None


def _server_url(url: str | None) -> str:
    if not url:
        raise ConfigError(
            "no aigc server given: pass its URL (Client(url) or --server URL) or set AIGC_SERVER.", field="server"
        )
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--server {url!r} is not a server's URL; give one like http://127.0.0.1:8000.", field="server"
        )
    return str(url).strip().rstrip("/")


def _inside(out: Path, relative: str) -> Path:
    """Where a file a server listed goes under `out`: a plain relative path, never one that leaves `out`."""
    parts = PurePosixPath(relative).parts
    if (
        not parts
        or PurePosixPath(relative).is_absolute()
        or any(p in (".", "..") or p.startswith(".") or "\\" in p or ":" in p for p in parts)
    ):
        raise GenerationError(f"the server listed an unsafe file name {relative!r}; nothing was written for it.")
    return out.joinpath(*parts)


def _json_ready(body: Any) -> str:
    try:
        return json.dumps(body)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"the request cannot be sent to a server as JSON ({error}); pass plain values (text, numbers, lists)."
        ) from None


def _whole(text: Any) -> Any:
    try:
        return int(text)
    except (TypeError, ValueError):
        return text


def _dispatch(
    event: Mapping[str, Any], progress: Callable[[Progress], None] | None, streamer: Callable[[str], Any] | None
) -> None:
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    if event.get("event") == "progress" and progress is not None:
        progress(
            Progress(
                str(data.get("stage")),
                int(data.get("step") or 0),
                int(data.get("total") or 0),
                str(data.get("detail") or ""),
            )
        )
    elif event.get("event") == "delta" and streamer is not None:
        streamer(str(data.get("text", "")))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _reworded(error: AIGCError, old: str, new: str) -> AIGCError:
    """The same error naming the user's file rather than what the server called it."""
    message = str(error).replace(old, new)
    return type(error)(message, field=error.field) if isinstance(error, ConfigError) else type(error)(message)

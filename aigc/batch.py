"""Asset batches for creative teams: a prompts file x n variants -> files + manifest.jsonl, resumable.

Every asset is written atomically and only then recorded in the manifest (one JSON line, appended and
fsynced), so an interrupted run (Ctrl-C, kill -9, a crash) never leaves a half-written asset that looks
finished: re-running the same command skips what the manifest records and makes the rest. Seeds are
derived from the batch seed, the row and the variant, so a re-run (or another engine) makes the same assets.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import registry
from .assets import Asset
from .errors import AIGCError, ConfigError

SUFFIX = {"text": ".txt", "image": ".png", "audio": ".wav"}
ROW_KEYS = ("prompt", "seed", "backend", "model", "n")  # the rest of a row's fields are generator knobs
LOOP_KEYS = ("best_of", "min_score", "max_attempts")


@dataclass
class Job:
    """One asset to make: a row's prompt, one variant, its seed and the request that makes it."""

    row: int
    variant: int
    prompt: str
    seed: int
    kind: str
    backend: str
    model: str | None
    params: dict[str, Any]
    loop: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.row}:{self.variant}"

    @property
    def fingerprint(self) -> str:
        """What the asset depends on: a finished row whose fingerprint changed was asked for differently."""
        request = [self.prompt, self.seed, self.kind, self.backend, self.model, self.params, self.loop]
        return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def group(self) -> str:
        """Jobs with the same group can share one batched generate call."""
        return json.dumps([self.kind, self.backend, self.model, self.params, self.loop], sort_keys=True, default=str)

    def file_name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.prompt.lower()).strip("-")[:32].rstrip("-") or "asset"
        return f"r{self.row:04d}-v{self.variant}-{slug}{SUFFIX[self.kind]}"


def derive_seed(batch_seed: int, row: int, variant: int) -> int:
    """A seed per (batch seed, row, variant): stable across runs, engines and row order."""
    digest = hashlib.sha256(f"{batch_seed}:{row}:{variant}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def read_prompts(path: str | Path) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """(row number, fields or None, why not) for every row of a .txt, .csv or .jsonl prompts file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read prompts file {path}: {error}") from None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)]
        return [(i, {"prompt": line}, None) for i, line in lines if line and not line.startswith("#")]
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise ConfigError(f"{path}: a CSV prompts file needs a header row with a 'prompt' column.")
        return [(i, {k: _cell(v) for k, v in row.items() if k and v not in (None, "")}, None)
                for i, row in enumerate(reader, 2)]
    if suffix == ".jsonl":
        rows: list[tuple[int, dict[str, Any] | None, str | None]] = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                rows.append((i, value, None) if isinstance(value, dict) else (i, None, "not a JSON object"))
            except json.JSONDecodeError as error:
                rows.append((i, None, f"not valid JSON ({error.msg})"))
        return rows
    raise ConfigError(f"{path}: prompts come as .txt (one per line), .csv (a 'prompt' column) or .jsonl.")


def _cell(value: str) -> Any:
    """CSV cells are text; numbers and booleans become numbers and booleans, as in JSONL."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def plan(rows: Iterable[tuple[int, dict[str, Any] | None, str | None]], *, kind: str, n: int, seed: int,
         backend: str | None, model: str | None, params: dict[str, Any],
         loop: dict[str, Any]) -> tuple[list[Job], list[dict[str, Any]]]:
    """Jobs for the good rows, and a failure record (row, reason) for each bad one. Loads nothing."""
    jobs, failures = [], []
    for number, fields, problem in rows:
        try:
            if problem:
                raise ConfigError(problem)
            fields = dict(fields or {})
            prompt = fields.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ConfigError("the row has no prompt")
            row_backend = fields.get("backend", backend)
            spec = registry.get(kind, row_backend)
            knobs = {**params, **{k: v for k, v in fields.items() if k not in ROW_KEYS}}
            spec.load().check_params(knobs)
            row_n = fields.get("n", n)
            if not isinstance(row_n, int) or row_n < 1:
                raise ConfigError(f"n={row_n!r} must be a whole number >= 1")
            row_seed = fields.get("seed")
            for variant in range(row_n):
                job_seed = row_seed + variant if isinstance(row_seed, int) else derive_seed(seed, number, variant)
                jobs.append(Job(number, variant, prompt.strip(), job_seed, kind, spec.name,
                                fields.get("model", model), knobs, dict(loop)))
        except AIGCError as error:
            failures.append({"row": number, "reason": str(error)})
    return jobs, failures


class Manifest:
    """manifest.jsonl: one line per finished asset, appended atomically; the source of truth for resume."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "manifest.jsonl"

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_bytes().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: its asset is simply made again
        return records

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with open(self.path, "ab+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # after a torn line, start on a fresh one
                    data = b"\n" + data
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


@dataclass
class Summary:
    made: int = 0
    skipped: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"made {self.made}, skipped {self.skipped} already done, failed {len(self.failed)}"
        if self.changed:
            text += f", {len(self.changed)} finished asset(s) now asked for with other params (kept; use a new --out)"
        return text


def record_of(job: Job, asset: Asset, file: str) -> dict[str, Any]:
    return {"prompt": job.prompt, "row": job.row, "variant": job.variant, "seed": asset.seed, "file": file,
            "kind": job.kind, "backend": job.backend, "model": asset.model, "params": asset.params,
            "scores": asset.scores, "score": asset.score, "timings": asset.timings, "fingerprint": job.fingerprint}


def make(jobs: list[Job], manager=None) -> list[tuple[Job, Asset | None, str | None]]:
    """Generate a group of jobs in one batched call (or one by one with the scorer's loop); isolate failures."""
    from .api import generate

    first = jobs[0]
    try:
        if first.loop:
            assets = [generate(j.kind, j.prompt, backend=j.backend, model=j.model, seed=j.seed, manager=manager,
                               **j.loop, **j.params)[0] for j in jobs]
        else:
            assets = generate(first.kind, [j.prompt for j in jobs], backend=first.backend, model=first.model,
                              seed=[j.seed for j in jobs], manager=manager, **first.params)
        return [(j, a, None) for j, a in zip(jobs, assets)]
    except AIGCError as error:
        if len(jobs) == 1:
            return [(first, None, str(error))]
        return [result for job in jobs for result in make([job], manager)]  # find the one that fails


def chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]

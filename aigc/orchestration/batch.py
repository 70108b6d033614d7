"""Asset batches for creative teams: a prompts file x n variants -> files + manifest.jsonl, resumable.

Every asset is written atomically and only then recorded in the manifest (one JSON line, appended and
fsynced), so an interrupted run (Ctrl-C, kill -9, a crash) never leaves a half-written asset that looks
finished: re-running the same command skips what the manifest records and makes the rest. Seeds are
derived from the batch seed, the row and the variant, so a re-run (or another engine) makes the same assets.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import checks, limits
from .. import seeds as seed_rule
from ..errors import AIGCError, ConfigError
from ..media import formats
from ..media.assets import Asset
from ..runtime import registry
from ..storage import append_jsonl, read_jsonl, read_text, slug

ROW_KEYS = ("prompt", "seed", "backend", "model", "n")  # the rest of a row's fields are generator knobs


@dataclass(frozen=True)
class Row:
    """One row of a prompts file: its line number, its fields (or why it could not be read), and whether its
    values are text to be read as the knobs say (CSV, TXT) or already typed (JSONL)."""

    number: int
    fields: dict[str, Any] | None
    problem: str | None = None
    textual: bool = False


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
        return f"r{self.row:04d}-v{self.variant}-{slug(self.prompt, 32, 'asset')}{formats.default(self.kind).suffix}"


def derive_seed(batch_seed: int, row: int, variant: int) -> int:
    """The seed of a row's variant (seeds.derive under the batch seed): stable across runs, engines and row order."""
    return seed_rule.derive(batch_seed, "row", row, "variant", variant)


def variant_seed(row_seed: int, variant: int) -> int:
    """A row's own seed is its first variant's; the others derive from it, so no two share a seed."""
    return row_seed if variant == 0 else seed_rule.derive(row_seed, "variant", variant)


def read_prompts(path: str | Path) -> list[Row]:
    """Every row of a .txt, .csv or .jsonl prompts file (a bad row carries its problem instead of fields)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".jsonl"):
        raise ConfigError(f"{path}: prompts come as .txt (one per line), .csv (a 'prompt' column) or .jsonl.")
    rows = _rows(path, suffix, read_text(path, "prompts file"))  # refuses more rows than batch_assets, unbuilt
    if not rows:
        raise ConfigError(
            f"{path} holds no prompts; write one per line (.txt), one per row under a 'prompt' "
            "header (.csv), or one JSON object per line (.jsonl)."
        )
    return rows


def _rows(path: Path, suffix: str, text: str) -> list[Row]:
    """The file's rows; their number is checked against batch_assets before a row is built or parsed."""
    if suffix == ".csv":
        return _csv_rows(path, text)
    lines = text.splitlines()
    if suffix == ".txt":
        check_rows(sum(1 for line in lines if (kept := line.strip()) and not kept.startswith("#")), str(path))
        stripped = [(i, line.strip()) for i, line in enumerate(lines, 1)]
        return [Row(i, {"prompt": line}, textual=True) for i, line in stripped if line and not line.startswith("#")]
    check_rows(sum(1 for line in lines if line.strip()), str(path))
    rows: list[Row] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            rows.append(Row(i, value) if isinstance(value, dict) else Row(i, None, "not a JSON object"))
        except json.JSONDecodeError as error:
            rows.append(Row(i, None, f"not valid JSON ({error.msg})"))
        except RecursionError:
            rows.append(Row(i, None, "JSON nested too deeply"))
    return rows


def _csv_rows(path: Path, text: str) -> list[Row]:
    """CSV rows by the line they start on (a quoted cell may span lines); cells stay text for the Params."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames or "prompt" not in [name.strip() for name in reader.fieldnames]:
            raise ConfigError(f"{path}: a CSV prompts file needs a header row with a 'prompt' column.")
        rows: list[Row] = []
        start, most = reader.line_num + 1, limits.get("batch_assets")
        for row in reader:
            if len(rows) == most:  # one row too many: count the rest, building none of them
                check_rows(most + 1 + sum(1 for _ in reader), str(path))
            cells = {k.strip(): v for k, v in row.items() if isinstance(k, str) and k.strip() and v not in (None, "")}
            rows.append(Row(start, cells, textual=True))
            start = reader.line_num + 1
        return rows
    except csv.Error as error:
        raise ConfigError(f"{path}:{reader.line_num}: not valid CSV ({error}).") from None


def plan(
    rows: Iterable[Row],
    *,
    kind: str,
    n: int,
    seed: int,
    backend: str | None,
    model: str | None,
    params: dict[str, Any],
    loop: dict[str, Any],
) -> tuple[list[Job], list[dict[str, Any]]]:
    """Jobs for the good rows, and a failure record (row, reason) for each bad one. Loads nothing.

    A row's own value wins over the batch's; a value of None (JSONL null, an empty CSV cell) means the default.
    The assets the rows ask for are counted (check_size) before any row is planned.
    """
    rows = list(rows)
    check_size(rows, n, "this batch")
    jobs, failures = [], []
    for row in rows:
        try:
            jobs += _plan_row(row, kind=kind, n=n, seed=seed, backend=backend, model=model, params=params, loop=loop)
        except Exception as error:  # noqa: BLE001 - one bad row must never stop the batch
            failures.append({"row": row.number, "reason": _reason(error)})
    return jobs, failures


def check_rows(count: int, where: str) -> None:
    """Refuse more rows than batch_assets (a row asks at least one asset, or fails), before they are built."""
    limits.check("batch_assets", count, f"the number of rows in {where}", field="rows")


def check_size(rows: Sequence[Row | str | dict[str, Any]], n: int, where: str) -> None:
    """Refuse a batch whose rows ask for more assets than batch_assets, before any is planned: counting is cheap,
    planning is not. `rows` are Rows, or a request's rows (a prompt, or an object like a JSONL line). A row asks
    its own n (else the batch's) when it has a prompt and that n is one plan takes, so the count is never below
    what plan makes."""
    check_rows(len(rows), where)
    limit = limits.get("outputs")
    asked = sum(_asked(row, n, limit) for row in rows)
    limits.check("batch_assets", asked, f"the assets {where} asks for (its rows x n)", field="n")


def _asked(row: Row | str | dict[str, Any], n: int, most_n: int) -> int:
    """The assets one row asks for: 0 for a row plan refuses for its missing prompt or its n."""
    if isinstance(row, str):
        return n
    fields, textual = (row.fields, row.textual) if isinstance(row, Row) else (row, False)
    if not isinstance(fields, dict) or fields.get("prompt") in (None, ""):
        return 0
    given = fields.get("n")
    if given is None:
        return n
    try:
        asked = _whole(given, "n", textual, least=1)
    except ConfigError:
        return 0
    return asked if asked <= most_n else 0


def _plan_row(
    row: Row,
    *,
    kind: str,
    n: int,
    seed: int,
    backend: str | None,
    model: str | None,
    params: dict[str, Any],
    loop: dict[str, Any],
) -> list[Job]:
    if row.problem:
        raise ConfigError(row.problem)
    fields = {k: v for k, v in (row.fields or {}).items() if v is not None}
    if "prompt" not in fields or fields["prompt"] == "":
        raise ConfigError("the row has no prompt")
    prompt = checks.prompts(fields["prompt"])[0] if isinstance(fields["prompt"], str) else None
    if prompt is None:
        raise ConfigError(
            f"the row's prompt must be text, not {type(fields['prompt']).__name__} "
            f"({fields['prompt']!r:.40}); quote it in JSON",
            field="prompt",
        )
    row_model = fields.get("model", model)
    spec = registry.get(kind, fields.get("backend", backend), row_model)
    cls = spec.load()
    knobs = {k: v for k, v in fields.items() if k not in ROW_KEYS}
    if row.textual:
        knobs = cls.parse_knobs(knobs)
    knobs = {**params, **knobs}
    cls.check_params(knobs)
    row_n = _whole(fields.get("n", n), "n", row.textual, least=1)
    limits.check("outputs", row_n, "this row's n (variants)", field="n")
    row_seed = fields.get("seed")
    if row_seed is not None:
        row_seed = seed_rule.check(_whole(row_seed, "seed", row.textual, least=0))
    return [
        Job(
            row.number,
            variant,
            prompt.strip(),
            variant_seed(row_seed, variant) if row_seed is not None else derive_seed(seed, row.number, variant),
            kind,
            spec.name,
            row_model,
            knobs,
            dict(loop),
        )
        for variant in range(row_n)
    ]


def _whole(value: Any, name: str, textual: bool, least: int) -> int:
    if textual and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{name}={value!r} must be a whole number >= {least}", field=name)
    return value


class Manifest:
    """manifest.jsonl: one line per finished asset, appended atomically; the source of truth for resume."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "manifest.jsonl"
        self.skipped: list[int] = []  # line numbers that were torn or malformed, for the summary

    def records(self) -> list[dict[str, Any]]:
        """Every valid record, once per (row, variant). A line cut short by a crash, or one that is not a record
        of ours, is skipped (and its line number kept in `skipped`): its asset is simply made again."""
        self.skipped = []
        seen: dict[tuple[int, int], dict[str, Any]] = {}
        for number, record in enumerate(read_jsonl(self.path, self.skipped), 1):
            if not _valid(record):
                self.skipped.append(number)
            else:
                seen.setdefault((record["row"], record["variant"]), record)
        return list(seen.values())

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, [record])


def _valid(record: dict[str, Any]) -> bool:
    """A manifest record written by aigc: whole-number row and variant, a plain file name in the directory."""
    whole = all(isinstance(record.get(k), int) and not isinstance(record.get(k), bool) for k in ("row", "variant"))
    name = record.get("file")
    return whole and isinstance(name, str) and name == Path(name).name and not name.startswith(".")


@dataclass
class Summary:
    made: int = 0
    skipped: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0  # manifest lines that were torn or not ours (skipped; their assets made again)

    def __str__(self) -> str:
        text = f"made {self.made}, skipped {self.skipped} already done, failed {len(self.failed)}"
        if self.changed:
            text += f", {len(self.changed)} finished asset(s) now asked for with other params (kept; use a new --out)"
        if self.malformed:
            text += f", {self.malformed} malformed manifest line(s) skipped"
        return text

    @property
    def nothing_made(self) -> bool:
        """Every row failed: the command line then exits 1."""
        return bool(self.failed) and not self.made and not self.skipped


def record_of(job: Job, asset: Asset, file: str) -> dict[str, Any]:
    return {
        "prompt": job.prompt,
        "row": job.row,
        "variant": job.variant,
        "seed": asset.seed,
        "file": file,
        "kind": job.kind,
        "backend": job.backend,
        "model": asset.model,
        "params": asset.params,
        "scores": asset.scores,
        "score": asset.score,
        "timings": asset.timings,
        "fingerprint": job.fingerprint,
    }


def make(jobs: list[Job], manager=None) -> list[tuple[Job, Asset | None, str | None]]:
    """Generate a group of jobs in one batched call (or one by one with the scorer's loop); isolate failures."""
    from ..api import generate

    first = jobs[0]
    try:
        if first.loop:
            assets = [
                generate(
                    j.kind,
                    j.prompt,
                    backend=j.backend,
                    model=j.model,
                    seed=j.seed,
                    manager=manager,
                    **j.loop,
                    **j.params,
                )[0]
                for j in jobs
            ]
        else:
            assets = generate(
                first.kind,
                [j.prompt for j in jobs],
                backend=first.backend,
                model=first.model,
                seed=[j.seed for j in jobs],
                manager=manager,
                **first.params,
            )
        return [(j, a, None) for j, a in zip(jobs, assets, strict=True)]
    except Exception as error:  # noqa: BLE001 - a failure of one group must not stop the batch
        if len(jobs) == 1:
            return [(first, None, _reason(error))]
        return [result for job in jobs for result in make([job], manager)]  # find the one that fails


def _reason(error: Exception) -> str:
    """An error's one-line reason: aigc's own messages as they are, anything else with its type."""
    return str(error) if isinstance(error, AIGCError) else f"{type(error).__name__}: {error}"


def chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]

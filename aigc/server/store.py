"""The server's source of truth: jobs, their assets and their events in one SQLite database (WAL mode).

A job's assets are recorded in the same transaction that advances the job, after their files were written
atomically, so a kill -9 at any moment leaves a consistent queue: a restart finds every finished asset
recorded once, and what is left to make.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("aigc.server")

STATES = ("pending", "running", "done", "failed", "cancelled")
ACTIVE = ("pending", "running")
NEW_COLUMNS = {
    "merge_key": "TEXT",
    "merged": "TEXT NOT NULL DEFAULT '[]'",
    "worker": "TEXT",  # since 0.2
    "fingerprint": "TEXT",
}  # since 0.4: what an Idempotency-Key was first used for
REQUEST_WAIT_S = 5.0  # how long a request waits for a database another process holds before it is answered 503
WORKER_WAIT_S = 120.0  # how long a worker's write waits (its job goes on once the other process lets go)
BUSY_STEP_S = 0.1  # one try at SQLite's lock; between tries the store's own lock is free, so reads go on
CHECK_S = 20.0  # the integrity check at start stops here on a huge database (which then starts unchecked, saying so)
# an asset's owner, prompt and score, copied from its job and record when it is recorded, so the gallery's filters
# and sorts are indexed SQL (since 0.3; an older database is filled in when opened)
ASSET_COLUMNS = {"owner": "TEXT", "prompt": "TEXT", "score": "REAL"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, type TEXT NOT NULL, kind TEXT, request TEXT NOT NULL,
    state TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, expected INTEGER NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}', error TEXT, cancel INTEGER NOT NULL DEFAULT 0, idempotency TEXT,
    seq INTEGER NOT NULL, merge_key TEXT, merged TEXT NOT NULL DEFAULT '[]', worker TEXT, fingerprint TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(owner, idempotency) WHERE idempotency IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, position INTEGER NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    media_type TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL,
    UNIQUE(job, position)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, owner TEXT NOT NULL, type TEXT NOT NULL,
    data TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job, id);
CREATE TABLE IF NOT EXISTS ratings (
    asset TEXT NOT NULL, user TEXT NOT NULL, value INTEGER NOT NULL, note TEXT, rated REAL NOT NULL,
    PRIMARY KEY (asset, user)
);
"""
ASSET_INDEXES = """
CREATE INDEX IF NOT EXISTS assets_time ON assets(created, id);
CREATE INDEX IF NOT EXISTS assets_owner_time ON assets(owner, created, id);
CREATE INDEX IF NOT EXISTS assets_kind_time ON assets(kind, created, id);
CREATE INDEX IF NOT EXISTS assets_score ON assets(COALESCE(score, -1.0), id);
CREATE INDEX IF NOT EXISTS assets_owner_score ON assets(owner, COALESCE(score, -1.0), id);
CREATE INDEX IF NOT EXISTS events_owner ON events(owner, id);
"""


@dataclass
class Job:
    """One queued request and how far it got."""

    id: str
    owner: str
    type: str  # "generate" | "run" | "batch"
    kind: str | None
    request: dict[str, Any]
    state: str
    created: float
    expected: int  # assets the job ends with when it succeeds
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    cancel: bool = False
    seq: int = 0
    merge_key: str | None = None  # jobs with the same key may share one batched generator call
    merged: list[str] = field(default_factory=list)  # the jobs this one shared calls with
    worker: str | None = None  # the runner that has it (None: not running, or a killed server's)


@dataclass
class AssetRow:
    id: str
    job: str
    position: int
    kind: str
    path: str  # relative to the data directory; never taken from a request
    media_type: str
    size: int
    etag: str
    record: dict[str, Any]


class Busy(Exception):
    """The database is held by another program (a sqlite3 shell, a backup) longer than this thread waits: a request
    is answered 503 with Retry-After (app.py), never left hanging or a 500."""


class QueueLimit(Exception):
    """The owner already has `limit` jobs queued or running (service.QueueFull answers it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class KeyReused(Exception):
    """The owner's Idempotency-Key was first used for another request (service.py answers it 409)."""


class _Guard:
    """The store's lock: one thread at a time on the connection, waiting at most its own patience (REQUEST_WAIT_S, or
    a worker's WORKER_WAIT_S); SQLite's "database is locked" leaves it as Busy."""

    def __init__(self) -> None:
        self._lock, self._local, self._warned = threading.RLock(), threading.local(), 0.0

    @property
    def wait_s(self) -> float:
        """How long this thread waits for the database."""
        return getattr(self._local, "wait_s", REQUEST_WAIT_S)

    def patience(self, seconds: float) -> None:
        self._local.wait_s = seconds

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self.wait_s):
            raise self._busy()

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        self._lock.release()
        if _locked(error):
            raise self._busy() from None

    def _busy(self) -> Busy:
        if time.monotonic() - self._warned > 60:  # the operator hears of it once a minute, not once a request
            self._warned = time.monotonic()
            log.warning(
                "aigc serve: the database is locked by another program; requests that need it are answered "
                "503 until it lets go"
            )
        return Busy(
            "the server's job database is locked by another program (a backup or a sqlite3 shell); try again "
            "in a few seconds."
        )


def _locked(error: BaseException | None) -> bool:
    """Whether `error` is SQLite's SQLITE_BUSY or SQLITE_LOCKED: another connection holds what this one needs."""
    return isinstance(error, sqlite3.OperationalError) and getattr(error, "sqlite_errorcode", 0) & 0xFF in (5, 6)


class Store:
    """Thread-safe access to the database: one connection, one lock, short transactions."""

    def __init__(self, path: Path, private: bool = False) -> None:
        self.path, self.private = path, private  # private: merges are recorded between one owner's jobs only
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=REQUEST_WAIT_S)
            self._db.row_factory = sqlite3.Row
            self._lock = _Guard()
            with self._lock:
                self._check()
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # a finished asset's row survives a power cut too
                self._db.executescript(SCHEMA)
                self._add_columns()
                # one server owns a data directory (app.py holds its lock): jobs still running are orphans of a
                # killed one
                self._db.execute("UPDATE jobs SET worker=NULL WHERE state='running'")
                self._db.execute(f"PRAGMA busy_timeout={int(BUSY_STEP_S * 1000)}")  # then: transaction()'s tries
        except Busy:
            raise ConfigError(
                f"{path} is locked by another program (a sqlite3 shell, a backup?); let it finish or "
                "close it, then start aigc serve again."
            ) from None
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
                raise self._damaged(str(error)) from None
            raise ConfigError(f"cannot open {path}: {error}.") from None
        self.changed = threading.Condition()  # notified after every new event, for the SSE streams

    def _check(self) -> None:
        """Refuse a damaged database at start (rather than 500s on the routes that touch its bad pages), within
        CHECK_S: a database too large to check by then starts unchecked, with a warning."""
        deadline = time.monotonic() + CHECK_S
        self._db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        except sqlite3.OperationalError as error:
            if "interrupt" not in str(error):
                raise
            log.warning(
                "aigc serve: %s is too large to check in %.0f s; starting without the check", self.path, CHECK_S
            )
            return
        finally:
            self._db.set_progress_handler(None, 0)
        if problems != ["ok"]:
            raise self._damaged("; ".join(problems))

    def _damaged(self, reason: str) -> ConfigError:
        reason = " ".join(reason.replace("*** in database main ***", "").split())[:300]
        return ConfigError(
            f"{self.path} is damaged ({reason}); restore it from a backup, or "
            "move it away to start with an empty queue (the files under "
            f"{self.path.parent} stay where they are)."
        )

    def _add_columns(self) -> None:
        """A database an older server made gets the columns it lacks (its jobs are simply never merged)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, declaration in NEW_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {declaration}")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_merge ON jobs(merge_key, state, seq)")
        have = {row[1] for row in self._db.execute("PRAGMA table_info(assets)")}
        missing = [column for column in ASSET_COLUMNS if column not in have]
        for column in missing:
            self._db.execute(f"ALTER TABLE assets ADD COLUMN {column} {ASSET_COLUMNS[column]}")
        if missing:
            self._db.execute(
                "UPDATE assets SET owner=(SELECT owner FROM jobs WHERE jobs.id=assets.job), "
                "prompt=json_extract(record, '$.prompt'), score=json_extract(record, '$.score')"
            )
        self._db.executescript(ASSET_INDEXES)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. Another program's lock on the database is waited out in short tries, the store's
        own lock free between them (so reads, which WAL lets go on, are not held up behind a waiting write), for
        this thread's patience; then Busy."""
        deadline = time.monotonic() + self._lock.wait_s
        while True:
            with self._lock:
                if self._begin(deadline):
                    try:
                        yield self._db
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    return
            time.sleep(BUSY_STEP_S)

    def _begin(self, deadline: float) -> bool:
        """BEGIN IMMEDIATE (the write lock), or False while another connection holds it and time is left."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as error:
            if not _locked(error) or time.monotonic() > deadline:
                raise
            return False

    # --- jobs ----------------------------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        type_: str,
        kind: str | None,
        request: dict[str, Any],
        expected: int,
        idempotency: str | None = None,
        merge_key: str | None = None,
        *,
        limit: int | None = None,
        fingerprint: str | None = None,
    ) -> tuple[Job, bool]:
        """A new pending job, or the owner's earlier job with the same idempotency key; (job, created).

        One transaction decides: KeyReused if that key came with another request (its `fingerprint`), QueueLimit if
        the owner already has `limit` jobs queued or running, so concurrent POSTs never overshoot the limit."""
        with self.transaction() as db:
            if idempotency is not None:
                row = db.execute("SELECT * FROM jobs WHERE owner=? AND idempotency=?", (owner, idempotency)).fetchone()
                if row is not None:
                    if None not in (row["fingerprint"], fingerprint) and row["fingerprint"] != fingerprint:
                        raise KeyReused(row["id"])
                    return _job(row), False
            if limit is not None and self._active(db, owner) >= limit:
                raise QueueLimit(limit)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            job = Job(
                secrets.token_hex(8),
                owner,
                type_,
                kind,
                request,
                "pending",
                time.time(),
                expected,
                seq=seq,
                merge_key=merge_key,
            )
            db.execute(
                "INSERT INTO jobs (id, owner, type, kind, request, state, created, expected, idempotency, seq,"
                " merge_key, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    owner,
                    type_,
                    kind,
                    json.dumps(request),
                    "pending",
                    job.created,
                    expected,
                    idempotency,
                    seq,
                    merge_key,
                    fingerprint if idempotency is not None else None,
                ),
            )
            self._event(db, job, "queued", {"position": self._position(db, job)})
        return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(
        self, *, owner: str | None, state: str | None, kind: str | None, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        where, args = [], []
        for column, value in (("owner", owner), ("state", state), ("kind", kind)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {clause}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs {clause} ORDER BY seq DESC LIMIT ? OFFSET ?", [*args, limit, offset]
            ).fetchall()
        return [_job(r) for r in rows], total

    def position(self, job: Job) -> int:
        with self._lock:
            return self._position(self._db, job)

    def _position(self, db: sqlite3.Connection, job: Job) -> int:
        """How many jobs run before this one (0: it is next, or running)."""
        if job.state != "pending":
            return 0
        return db.execute(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running') AND seq < ?", (job.seq,)
        ).fetchone()[0]

    def pending_count(self, owner: str) -> int:
        with self._lock:
            return self._active(self._db, owner)

    def _active(self, db: sqlite3.Connection, owner: str) -> int:
        """The owner's jobs queued or running."""
        return db.execute(
            "SELECT COUNT(*) FROM jobs WHERE owner=? AND state IN ('pending', 'running')", (owner,)
        ).fetchone()[0]

    def claim(self, worker: str = "runner") -> Job | None:
        """The next job for `worker`, marked running: a killed server's interrupted jobs first, then the pending
        job of the owner who started a job least recently (round-robin between owners), oldest first within one.

        While another program holds the database, an idle worker finds no job (None) and looks again, as a request
        gives way; a worker with a job waits longer (WORKER_WAIT_S) on its writes, so the job goes on afterwards."""
        self._lock.patience(REQUEST_WAIT_S)
        try:
            job = self._claim(worker)
        except Busy:
            return None
        self._lock.patience(WORKER_WAIT_S)
        return job

    def _claim(self, worker: str) -> Job | None:
        with self.transaction() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state='running' AND worker IS NULL ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                row = db.execute(
                    "SELECT j.* FROM jobs j WHERE j.state='pending' ORDER BY "
                    "(SELECT COALESCE(MAX(started), 0) FROM jobs k WHERE k.owner=j.owner), j.seq LIMIT 1"
                ).fetchone()
            if row is None:
                return None
            job = _job(row)
            if job.state == "pending":
                job.state, job.started = "running", time.time()
                self._event(db, job, "started", {})
            else:
                self._event(db, job, "resumed", {"assets": self._count(db, job.id)})
            db.execute("UPDATE jobs SET state='running', started=?, worker=? WHERE id=?", (job.started, worker, job.id))
            job.worker = worker
        return job

    def claim_compatible(self, job: Job, outputs: int, worker: str = "runner") -> builtins.list[Job]:
        """More jobs that may share `job`'s batched calls (the same merge key) with at most `outputs` outputs left
        to make between them, oldest first (a killed server's interrupted ones first), marked running for `worker`.
        The bound keeps a merged group to about one call, so owners still take turns between calls."""
        if job.merge_key is None or outputs <= 0:
            return []
        with self.transaction() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE merge_key=? AND id<>? AND (state='pending' OR "
                "(state='running' AND worker IS NULL)) ORDER BY state='pending', seq LIMIT ?",
                (job.merge_key, job.id, outputs),
            ).fetchall()
            jobs, now = [], time.time()
            for other in map(_job, rows):
                left = other.expected - self._count(db, other.id)
                if left > outputs:
                    break
                outputs -= left
                if other.state == "pending":
                    other.state, other.started = "running", now
                    shared = not self.private or other.owner == job.owner  # --private: nobody else's job id
                    self._event(db, other, "started", {"merged_with": job.id} if shared else {})
                db.execute(
                    "UPDATE jobs SET state='running', started=?, worker=? WHERE id=?", (other.started, worker, other.id)
                )
                other.worker = worker
                jobs.append(other)
        return jobs

    def record_merge(self, jobs: builtins.list[Job]) -> None:
        """Say in each job's record which jobs it shared batched calls with (on a private server, only its owner's:
        the record reaches the owner in views and OpenAI answers)."""
        if len(jobs) < 2:
            return
        with self.transaction() as db:
            for job in jobs:
                others = sorted(
                    {
                        *job.merged,
                        *(j.id for j in jobs if j.id != job.id and (not self.private or j.owner == job.owner)),
                    }
                )
                job.merged = others
                db.execute("UPDATE jobs SET merged=? WHERE id=?", (json.dumps(others), job.id))

    def emit(self, job: Job, type_: str, data: dict[str, Any]) -> None:
        """An event of the job's own (a streamed piece of text, say)."""
        with self.transaction() as db:
            self._event(db, job, type_, data)

    def progress(self, job: Job, progress: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET progress=? WHERE id=?", (json.dumps(progress), job.id))
            self._event(db, job, "progress", progress)

    def finish(self, job: Job, state: str, error: dict[str, Any] | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET state=?, finished=?, error=? WHERE id=?",
                (state, time.time(), json.dumps(error) if error else None, job.id),
            )
            self._event(
                db,
                job,
                {"done": "done", "failed": "failed", "cancelled": "cancelled"}[state],
                {"error": error} if error else {"assets": self._count(db, job.id)},
            )

    def request_cancel(self, job: Job) -> Job:
        """Cancel a pending job now; ask a running one to stop at its next step. Repeating it is harmless."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job.id,)).fetchone()
            current = _job(row)
            if current.state == "pending":
                db.execute("UPDATE jobs SET state='cancelled', finished=?, cancel=1 WHERE id=?", (time.time(), job.id))
                self._event(db, current, "cancelled", {})
            elif current.state == "running" and not current.cancel:
                db.execute("UPDATE jobs SET cancel=1 WHERE id=?", (job.id,))
        cancelled = self.get(job.id)
        assert cancelled is not None  # read above, and the store deletes no job
        return cancelled

    def cancelled(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def retry(self, job: Job) -> Job:
        """A failed or cancelled job back in the queue; the assets it made are kept and not made again."""
        with self.transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "UPDATE jobs SET state='pending', cancel=0, error=NULL, finished=NULL, started=NULL, seq=?, "
                "worker=NULL WHERE id=?",
                (seq, job.id),
            )
            job = _job(db.execute("SELECT * FROM jobs WHERE id=?", (job.id,)).fetchone())
            self._event(db, job, "queued", {"position": self._position(db, job), "retry": True})
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}

    # --- assets --------------------------------------------------------------------------------------------
    def add_assets(self, job: Job, rows: builtins.list[AssetRow], progress: dict[str, Any]) -> builtins.list[AssetRow]:
        """Record finished assets (their files already written) and the job's progress, in one transaction.

        A position already recorded (a resumed job saving again) keeps its first row.
        """
        added = []
        with self.transaction() as db:
            for row in rows:
                exists = db.execute("SELECT id FROM assets WHERE job=? AND position=?", (job.id, row.position))
                if exists.fetchone():
                    continue
                score = row.record.get("score")
                db.execute(
                    "INSERT INTO assets (id, job, position, kind, path, media_type, size, etag, record, created,"
                    " owner, prompt, score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.id,
                        job.id,
                        row.position,
                        row.kind,
                        row.path,
                        row.media_type,
                        row.size,
                        row.etag,
                        json.dumps(row.record),
                        time.time(),
                        job.owner,
                        row.record.get("prompt"),
                        score if isinstance(score, (int, float)) else None,
                    ),
                )
                added.append(row)
                self._event(
                    db,
                    job,
                    "candidate" if row.record.get("rank") else "asset",
                    {
                        "asset": row.id,
                        "position": row.position,
                        "kind": row.kind,
                        "score": row.record.get("score"),
                        "scores": row.record.get("scores"),
                    },
                )
            db.execute("UPDATE jobs SET progress=? WHERE id=?", (json.dumps(progress), job.id))
            self._event(db, job, "progress", progress)
        return added

    def positions(self, job_id: str) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT position FROM assets WHERE job=?", (job_id,))}

    def assets_of(self, job_id: str) -> builtins.list[AssetRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM assets WHERE job=? ORDER BY position", (job_id,)).fetchall()
        return [_asset(r) for r in rows]

    def asset(self, asset_id: str) -> AssetRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM assets WHERE id=?", (asset_id,)).fetchone()
        return _asset(row) if row else None

    def query(self, sql: str, args: builtins.list[Any]) -> builtins.list[sqlite3.Row]:
        """A read of the gallery's (gallery.py builds the SQL from checked parameters only)."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- ratings (the server's copy, for showing "my rating" at once; the team library holds them too) --------
    def rate(self, asset_id: str, user: str, value: int, note: str | None) -> None:
        """A user's latest rating of an asset; 0 takes it back."""
        with self.transaction() as db:
            if value == 0:
                db.execute("DELETE FROM ratings WHERE asset=? AND user=?", (asset_id, user))
            else:
                db.execute(
                    "INSERT INTO ratings (asset, user, value, note, rated) VALUES (?, ?, ?, ?, ?) ON CONFLICT"
                    "(asset, user) DO UPDATE SET value=excluded.value, note=excluded.note, rated=excluded.rated",
                    (asset_id, user, value, note, time.time()),
                )

    def ratings(self, asset_ids: builtins.list[str]) -> dict[str, builtins.list[dict[str, Any]]]:
        """Every user's rating of each asset, by asset id."""
        out: dict[str, list[dict[str, Any]]] = {asset_id: [] for asset_id in asset_ids}
        for start in range(0, len(asset_ids), 500):
            chunk = asset_ids[start : start + 500]
            rows = self.query(
                f"SELECT * FROM ratings WHERE asset IN ({', '.join('?' * len(chunk))}) ORDER BY rated", chunk
            )
            for r in rows:
                out[r["asset"]].append({"user": r["user"], "value": r["value"], "note": r["note"], "rated": r["rated"]})
        return out

    def last_event(self, owner: str | None) -> int:
        """The id of the newest event (of one owner's jobs): where a client that just read the jobs' state
        starts its event stream, so it misses nothing and replays no history."""
        with self._lock:
            if owner is None:
                return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE owner=?", (owner,)).fetchone()[0]

    def _count(self, db: sqlite3.Connection, job_id: str) -> int:
        return db.execute("SELECT COUNT(*) FROM assets WHERE job=?", (job_id,)).fetchone()[0]

    # --- events --------------------------------------------------------------------------------------------
    def _event(self, db: sqlite3.Connection, job: Job, type_: str, data: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO events (job, owner, type, data, created) VALUES (?, ?, ?, ?, ?)",
            (job.id, job.owner, type_, json.dumps({"job": job.id, **data}), time.time()),
        )
        with self.changed:
            self.changed.notify_all()

    def events_after(
        self, after: int, *, job: str | None = None, owner: str | None = None, limit: int = 500
    ) -> builtins.list[dict[str, Any]]:
        where: list[str] = ["id > ?"]
        args: list[int | str] = [after]
        if job is not None:
            where.append("job = ?")
            args.append(job)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", [*args, limit]
            ).fetchall()
        return [{"id": r["id"], "type": r["type"], "data": json.loads(r["data"])} for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: sqlite3.Row) -> Job:
    return Job(
        row["id"],
        row["owner"],
        row["type"],
        row["kind"],
        json.loads(row["request"]),
        row["state"],
        row["created"],
        row["expected"],
        row["started"],
        row["finished"],
        json.loads(row["progress"]),
        json.loads(row["error"]) if row["error"] else None,
        bool(row["cancel"]),
        row["seq"],
        row["merge_key"],
        json.loads(row["merged"]),
        row["worker"],
    )


def _asset(row: sqlite3.Row) -> AssetRow:
    return AssetRow(
        row["id"],
        row["job"],
        row["position"],
        row["kind"],
        row["path"],
        row["media_type"],
        row["size"],
        row["etag"],
        json.loads(row["record"]),
    )

"""Progress shown to a person on stderr: live bars on a terminal, a line per stage anywhere else (a log, CI).

`Console` is a progress sink (progress.py): one row per stage (loading a model, decoding tokens, denoising steps,
a workflow's steps, a batch's assets), removed as it completes. Off a terminal a stage that is still running
after `AIGC_PROGRESS_DELAY` seconds (0.5) gets one line, another every 30 s while it runs, and one when it ends
if it took 5 s or more: neither a 40-second first call nor a long batch looks hung, a log stays short, and work
that fails at once (a damaged model) leaves only its one-line error.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from . import progress as progress_channel
from .records import Progress

UNITS = {
    "decode": "tokens",
    "denoise": "steps",
    "generate": "outputs",
    "batch": "assets",
    "workflow": "steps",
    "score": "parts",
    "search": "prompts",
    "upscale": "files",
    "tiles": "tiles",
}
DELAY_ENV = "AIGC_PROGRESS_DELAY"  # off a terminal: seconds a stage runs before its line (default 0.5)
HEARTBEAT_S = 30.0  # off a terminal: a line this often while a stage runs
SLOW_S = 5.0  # off a terminal: a stage that took this long also says when it ended


@dataclass
class _Row:
    stage: str
    detail: str
    total: int
    step: int = 0
    started: float = field(default_factory=time.monotonic)
    said: float | None = None  # off a terminal: when its last line was written (None: not yet)
    task: Any = None  # on a terminal: its rich task id; off one: the timer that will announce it

    @property
    def label(self) -> str:
        if self.stage == "load":
            return f"loading {self.detail or 'a model'}"
        return f"{self.stage} {self.detail}".strip()

    @property
    def count(self) -> str:
        return f"{self.step}/{self.total} {UNITS.get(self.stage, '')}".rstrip() if self.total > 1 else ""


class Console:
    """A progress sink that shows each stage on `stream` (default stderr). Use it as a context manager, so the
    bars are cleared when the work ends; `skip` names stages not to show (e.g. "decode" while text streams)."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, skip: tuple[str, ...] = ()) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = _is_terminal(self.stream) if live is None else live
        self.skip = skip
        self.delay = _delay()
        self._rows: dict[str, _Row] = {}
        self._bars: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __call__(self, progress: Progress) -> None:
        if progress.stage in self.skip or progress.total <= 0:  # a stage with nothing to do shows nothing
            return
        with self._lock:
            row = self._rows.get(progress.stage)
            if progress.step >= progress.total:  # a stage's end closes its row, whatever it was showing last
                if row is not None:
                    row.step, row.total = progress.step, progress.total
                    self._end(row)
                return
            if row is None or row.detail != progress.detail or progress.step < row.step:
                if row is not None:
                    self._end(row, quiet=True)
                self._start(progress)
                return
            row.step, row.total = progress.step, progress.total
            self._show(row)

    def close(self) -> None:
        """Clear what is still shown (a stage that never reported its end, or work that failed)."""
        with self._lock:
            for row in list(self._rows.values()):
                self._end(row, quiet=True)
            if self._bars is not None:
                self._bars.stop()
                self._bars = None

    # --- rows -------------------------------------------------------------------------------------------------
    def _start(self, progress: Progress) -> None:
        row = _Row(progress.stage, progress.detail, progress.total, progress.step)
        self._rows[row.stage] = row
        if self.live:
            row.task = self._terminal().add_task(
                row.label, total=row.total if row.total > 1 else None, completed=row.step, count=row.count
            )
        elif self.delay <= 0:
            self._line(row)
        else:
            row.task = threading.Timer(self.delay, self._announce, args=(row,))
            row.task.daemon = True
            row.task.start()

    def _announce(self, row: _Row) -> None:
        """Off a terminal, once a stage has run for `delay` seconds: its first line."""
        with self._lock:
            if self._rows.get(row.stage) is row and row.said is None:
                self._line(row)

    def _show(self, row: _Row) -> None:
        if self.live:
            self._terminal().update(row.task, completed=row.step, count=row.count)
        elif row.said is not None and time.monotonic() - row.said >= HEARTBEAT_S:
            self._line(row, f"({time.monotonic() - row.started:.0f} s)")

    def _end(self, row: _Row, quiet: bool = False) -> None:
        self._rows.pop(row.stage, None)
        took = time.monotonic() - row.started
        if self.live:
            if self._bars is not None:
                self._bars.remove_task(row.task)
            return
        if isinstance(row.task, threading.Timer):
            row.task.cancel()
        if row.said is not None and not quiet and took >= SLOW_S:
            self._line(row, f"done in {took:.1f} s")

    def _line(self, row: _Row, note: str = "") -> None:
        row.said = time.monotonic()
        self.stream.write(" ".join(part for part in ("aigc:", row.label, row.count, note) if part) + "\n")
        self.stream.flush()

    def _terminal(self) -> Any:
        """rich's live bars, started on the first stage (rich loads only on a terminal)."""
        if self._bars is None:
            from rich.console import Console as RichConsole
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bars = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                console=RichConsole(file=self.stream),
                transient=True,
            )
            self._bars.start()
        return self._bars


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, "0.5")))
    except ValueError:
        return 0.5


@contextmanager
def scope(sink: progress_channel.Sink | Literal[False] | None) -> Iterator[None]:
    """Progress for one piece of work: to `sink` when given (False: none); with None, to the caller's sink if
    one listens, else, at the top level on a terminal, to bars on stderr (Python in a shell shows them too)."""
    if sink is None and not progress_channel.active() and _is_terminal(sys.stderr):
        with Console() as shown, progress_channel.reporting(shown):
            yield
        return
    with progress_channel.reporting(sink):
        yield

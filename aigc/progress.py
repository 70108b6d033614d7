"""How far long work is, told to whoever asked: a terminal's bars, a server's events, a caller's callback.

Work anywhere reports with `report(stage, step, total, detail)`: the decoding loop its tokens, the device manager
the model it is loading, a workflow its steps. It reaches the sink of the innermost `reporting(...)` block of the
same thread (a context variable), so no callback has to be threaded through every call in between, and two
threads (a server's workers) never see each other's. With no sink, a report costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from .records import Progress

Sink = Callable[[Progress], None]

_sink: ContextVar[Sink | None] = ContextVar("aigc_progress", default=None)


def report(stage: str, step: int, total: int, detail: str = "") -> None:
    """Tell the current sink, if any, that `stage` is at `step` of `total` (`detail`: what, e.g. which model).

    A sink may raise to stop the work (a server cancelling a job does): the error leaves through the caller."""
    sink = _sink.get()
    if sink is not None:
        sink(Progress(stage, step, total, detail))


def active() -> bool:
    """Whether anyone listens (work skips what only a listener would need)."""
    return _sink.get() is not None


@contextmanager
def reporting(sink: Sink | Literal[False] | None) -> Iterator[None]:
    """Within the block, reports go to `sink`; None keeps the caller's sink, False silences the block."""
    if sink is None:
        yield
        return
    token = _sink.set(sink or None)
    try:
        yield
    finally:
        _sink.reset(token)

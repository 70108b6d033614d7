"""The typed records aigc's parts hand each other through an Asset: its place in a workflow, the scorer's
search that chose it, and the refinement that steered it. JSON-ready through `asdict`, rebuilt by `from_dict`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass
class WorkflowLink:
    """Where an asset sits in a workflow run: its step, its own id ("poster-0") and the ids it came from."""

    step: str
    parents: list[str] = field(default_factory=list)
    id: str = ""


@dataclass
class Round:
    """One generate-and-score round of the scorer's loop: the knobs it ran with and its best score."""

    attempt: int
    knobs: dict[str, Any]
    best_score: float


@dataclass
class Search:
    """How the scorer's loop chose an asset, enough to explain the choice and to replay it."""

    rounds: list[Round]
    round: int  # the round this asset was made in
    min_score: float | None = None
    met_min_score: bool | None = None
    library: str | None = None  # the library novelty was judged against (None: none)
    library_size: int = 0  # its entries when the candidates were judged

    @property
    def attempts(self) -> int:
        """Rounds the search took (what Asset.attempts reports)."""
        return len(self.rounds)


@dataclass
class Refinement:
    """Gradient steps on an output's latent toward the prompt, and the objective before and after them."""

    steps: int
    objective_before: float
    objective_after: float


@dataclass(frozen=True)
class Progress:
    """How far a piece of work is: its stage ("load", "decode", "denoise", "workflow", "batch"...), step of total,
    and what it is working on where that helps (the model a load is for, the workflow's step)."""

    stage: str
    step: int
    total: int
    detail: str = ""


def to_dict(record: Any) -> dict[str, Any] | None:
    return None if record is None else asdict(record)


def from_dict(cls: type[R], data: dict[str, Any] | None) -> R | None:
    """Rebuild a record saved by to_dict; unknown keys (from a newer aigc) are ignored."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} record is an object, not {type(data).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in names}
    if cls is Search:
        rounds = values.get("rounds", [])
        if not isinstance(rounds, list):
            raise TypeError("a Search record's rounds are a list")
        values["rounds"] = [from_dict(Round, r) for r in rounds]
    return cls(**values)

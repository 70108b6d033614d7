"""The one seed rule: a call's outputs take seed, seed+1, ...; every other seed is derive()d from its parent.

Derived seeds (the scorer's later rounds, a workflow's steps and fan-out pieces, a batch's rows and
variants) are a hash of the parent seed and a path naming the place, below 2**52: exact as JSON numbers in
any language (JavaScript included), with room above them for a call's contiguous outputs. Two different
places collide with probability about (outputs per call) / 2**51, so in practice never.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence

from .errors import ConfigError

MAX_SEED = 2**63 - 1
DERIVED_BELOW = 2**52


def derive(seed: int, *path: str | int) -> int:
    """The seed of the place `path` under `seed`: stable across runs, machines and the order work is done in."""
    digest = hashlib.sha256(json.dumps([seed, *path]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % DERIVED_BELOW


def fresh() -> int:
    """A random seed for a request that gave none (recorded, so the output can be made again)."""
    return secrets.randbelow(2**31)


def chosen(seed: int | None) -> int:
    """The seed of a whole run or batch: the one given, else a fresh one, drawn once and recorded with its outputs
    (the same rule as a call's: no seed means a new random one; a run or batch directory that resumes keeps the
    seed it recorded)."""
    return fresh() if seed is None else check(seed)


def check(seed: object, what: str = "seed") -> int:
    """A valid seed, or a ConfigError that says what a seed may be."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what} {seed!r} must be an int between 0 and 2**63-1.", field="seed")
    return seed


def expand(seed: int | Sequence[int] | None, total: int) -> list[int]:
    """One seed per output: seed, seed+1, ... for an int; a list as given; fresh ones for None."""
    if seed is None:
        seed = fresh()
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds = [seed + i for i in range(total)]
    elif isinstance(seed, (list, tuple)):
        seeds = list(seed)
        if len(seeds) != total:
            raise ConfigError(
                f"seed has {len(seeds)} values but this request makes {total} outputs; give one per output.",
                field="seed",
            )
    else:
        raise ConfigError(f"seed={seed!r} must be an int or a list of ints.", field="seed")
    return [check(s) for s in seeds]

"""The one way parts become a score: a weighted geometric mean, so a zero anywhere sinks the whole."""

from __future__ import annotations

import math
from collections.abc import Mapping

FLOOR = 1e-4  # parts are floored inside the mean only, so poor candidates are still ordered, not all tied at 0


def weighted_geometric_mean(parts: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """exp(sum w*log(p) / sum w) over the parts that were measured (not None) and weigh more than 0; 0 if none."""
    used = [(part, weight) for name, weight in weights.items() if weight > 0 and (part := parts.get(name)) is not None]
    total = sum(weight for _, weight in used)
    if not used or total <= 0:
        return 0.0
    value = math.exp(sum(weight * math.log(max(float(part), FLOOR)) for part, weight in used) / total)
    return 0.0 if not math.isfinite(value) else min(1.0, max(0.0, value))

"""How many training runs share a machine's CPU cores at once, and with how many torch threads each.

Torch threads stop paying off after a few (the planner measures where), so several runs side by
side, each with fewer threads, often finish a batch of runs (seeds, walk-forward jobs) sooner than
one run at a time with all of them. With the loop speeds the profile measured for the planned setting
(transitions/s by thread count), the count chosen is the one that finishes every run soonest:
``ceil(runs / k)`` rounds of ``k`` runs at the speed of ``cores // k`` threads each. Without
measurements, as many runs as the cores hold at the planned threads.
"""

from __future__ import annotations

import math

# Peak RSS of one training process besides a large replay memory (docs/benchmarks.md: 544 MB in all).
RUN_MEMORY_GB = 0.6


def runs_at_once(runs: int, cores: int, planned_threads: int, memory_limit: int,
                 rates: dict[int, float] | None = None) -> tuple[int, int, str]:
    """``(runs at once, torch threads each, why)`` for ``runs`` runs on ``cores`` cores.

    ``planned_threads``: the plan's threads for one run (no run gets more). ``memory_limit``: how
    many runs the RAM holds. ``rates``: measured transitions/s by thread count; a thread count not
    measured counts at the nearest measured below it.
    """
    cores, planned = max(1, cores), max(1, planned_threads)
    limit = max(1, min(runs, memory_limit))

    def threads_each(k: int) -> int:
        return max(1, min(planned, cores // k))

    def speed(k: int) -> float | None:
        measured = [t for t in (rates or {}) if t <= threads_each(k)]
        return rates[max(measured)] if rates and measured else None

    if rates and speed(1) is not None:
        candidates = [k for k in range(1, min(limit, cores) + 1) if speed(k)]
        at_once = min(candidates, key=lambda k: (math.ceil(runs / k) / float(speed(k) or 1.0), k))
        why = "soonest done at the measured loop speeds: " + ", ".join(
            f"{k} x {speed(k):,.0f} tr/s at {threads_each(k)} thread(s)" for k in candidates[:4])
    else:
        at_once = max(1, min(cores // planned, limit))
        why = f"{cores} core(s) / {planned} planned thread(s)"
    if at_once == limit and memory_limit < runs and at_once < cores:
        why += f"; the RAM holds {memory_limit}"
    return at_once, threads_each(at_once), why

"""What the profiler measured: the real training loop's transitions per second per setting, and
what a run of the planned model spends beside the loop (validation, checkpoints, start-up).

A leaf module (no torch, no trainer) so profiles, caches and the planner can read measurements
without importing what produced them (``nexlify.hardware.measure``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Seconds the profiler spends measuring (bursts and run costs), torch's one-off imports apart: with
# them a cold profile stays within ~3 s on a quiet 2-core machine.
MEASURE_BUDGET_S = 1.5


@dataclass(frozen=True)
class LoopRate:
    """One burst of the real training loop: acting, env steps, storing and learning interleaved at
    the planned replay ratio, with ``parallel_envs`` accounts and ``threads`` torch threads."""

    device: str  # "cpu", "cuda" or "mps" (the device kind, not an index)
    model_size: str
    batch_size: int
    threads: int
    parallel_envs: int
    transitions_per_s: float

    def matches(self, device: str, model_size: str, batch_size: int) -> bool:
        return (self.device, self.model_size, self.batch_size) == (device_kind(device), model_size, batch_size)


def device_kind(device: str) -> str:
    """"cuda:1" -> "cuda": measurements are per kind of device."""
    return device.split(":")[0]


@dataclass(frozen=True)
class RunCosts:
    """What a run of ``model_size`` on ``device`` spends beside its loop, each timed once on the real
    agent: one greedy validation backtest of ``validation_steps`` bars (``validation_s``); one
    checkpoint with its replay memory (``checkpoint_s`` for the networks and optimizer, plus
    ``checkpoint_s_per_transition`` for each transition of replay it holds); and the first round's
    one-off start-up (``startup_s``: first allocations, kernels and thread pool, beyond a warm round)."""

    device: str
    model_size: str
    validation_s: float
    validation_steps: int
    checkpoint_s: float
    checkpoint_s_per_transition: float
    startup_s: float

    @classmethod
    def from_dict(cls, values: Any) -> RunCosts | None:
        """``asdict``'s layout back, or None for anything else (a hand-edited or older cache)."""
        try:
            costs = cls(str(values["device"]), str(values["model_size"]), float(values["validation_s"]),
                        int(values["validation_steps"]), float(values["checkpoint_s"]),
                        float(values["checkpoint_s_per_transition"]), float(values["startup_s"]))
        except (KeyError, TypeError, ValueError):
            return None
        return costs if costs.validation_steps > 0 else None


@dataclass(frozen=True)
class Measurements:
    """Every burst the profiler timed, how long it took, and whether it ran out of time."""

    rates: tuple[LoopRate, ...] = ()
    duration_s: float | None = None
    incomplete: bool = False  # the time budget ran out before every candidate was measured
    errors: tuple[str, ...] = ()
    run_costs: RunCosts | None = None  # of the planned model

    def __bool__(self) -> bool:
        return bool(self.rates)

    def by_threads(self, device: str, model_size: str, batch_size: int) -> dict[int, float]:
        """{threads: transitions/s} measured for one setting."""
        return {r.threads: r.transitions_per_s for r in self.rates if r.matches(device, model_size, batch_size)}

    def best(self, device: str, model_size: str, batch_size: int) -> LoopRate | None:
        """The fastest thread count measured for one setting, or None when it was not measured."""
        found = [r for r in self.rates if r.matches(device, model_size, batch_size)]
        return max(found, key=lambda r: r.transitions_per_s) if found else None

    def at(self, device: str, model_size: str, batch_size: int, threads: int) -> LoopRate | None:
        """The burst for one setting at one thread count, or None."""
        return next((r for r in self.rates if r.matches(device, model_size, batch_size) and r.threads == threads),
                    None)

    def to_dict(self) -> dict[str, Any]:
        """The ``profile['benchmarks']`` layout of ``hardware_profile.json`` ({} when nothing was measured)."""
        if not self.rates and not self.errors:
            return {}
        out: dict[str, Any] = {"loop_rates": [asdict(r) for r in self.rates], "duration_s": self.duration_s,
                               "incomplete": self.incomplete}
        if self.errors:
            out["errors"] = list(self.errors)
        if self.run_costs is not None:
            out["run_costs"] = asdict(self.run_costs)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Measurements:
        """Measurements from ``to_dict``'s layout; anything else (an older cache) reads as none."""
        v = dict(values or {})
        rates = []
        for row in v.get("loop_rates") or []:
            try:
                rates.append(LoopRate(str(row["device"]), str(row["model_size"]), int(row["batch_size"]),
                                      int(row["threads"]), int(row["parallel_envs"]),
                                      float(row["transitions_per_s"])))
            except (KeyError, TypeError, ValueError):
                continue  # a hand-edited or foreign row: ignore it, never fail the plan
        return cls(tuple(r for r in rates if r.transitions_per_s > 0), v.get("duration_s"),
                   bool(v.get("incomplete")), tuple(v.get("errors") or ()), RunCosts.from_dict(v.get("run_costs")))

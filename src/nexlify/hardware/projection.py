"""The planned run's training time from what the profiler measured on this machine.

A run spends its time in the loop (acting, env steps, learning: the measured transitions/s of
exactly its setting) and, beside it, in the greedy validation backtests (one per ``eval_interval``
episodes' worth of transitions, plus one where the run ends), the ``checkpoint_ep{N}.pth`` files
(one per ``save_interval``, each with the replay memory filled so far) and its first round's one-off
start-up. The profiler times one of each on the planned model (``RunCosts``); this module multiplies
them by the counts the config implies. No fudge factor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.evaluation.snapshots import validation_checks
from nexlify.hardware.measurements import LoopRate, Measurements, RunCosts, device_kind
from nexlify.hardware.plan import STEPS_PER_EPISODE

# The standard run's validation split: the default split gives it 15% of the rows against train's 70%.
VALIDATION_STEPS = STEPS_PER_EPISODE * 15 // 70


@dataclass(frozen=True)
class Projection:
    """The planned run's time, part by part (seconds), and the counts behind the parts."""

    loop_s: float
    validation_s: float
    checkpoint_s: float
    startup_s: float
    validations: int
    checkpoints: int
    transitions_per_s: float

    @property
    def total_s(self) -> float:
        return self.loop_s + self.validation_s + self.checkpoint_s + self.startup_s

    def to_dict(self) -> dict[str, Any]:
        return {**{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()},
                "total_s": round(self.total_s, 3)}


def planned_rate(measurements: Measurements, config: TrainingConfig) -> LoopRate | None:
    """The measured burst that matches ``config`` (device, model, batch, threads), or None when the
    run differs from everything measured (e.g. a user override)."""
    return measurements.at(config.device, config.model_size, config.batch_size, config.num_workers)


def validations_in_run(config: TrainingConfig) -> int:
    """Validation backtests the trainer runs: one per ``eval_interval`` episodes (a fraction of one
    too), and one more where the run ends when that is not a multiple."""
    return validation_checks(config.episodes, config.eval_interval)


def checkpoint_replay_sizes(config: TrainingConfig, steps_per_episode: int) -> list[int]:
    """Transitions of replay memory in each ``checkpoint_ep{N}.pth`` of the run: everything collected
    so far, up to the buffer's size."""
    every = config.save_interval * steps_per_episode
    return [min(config.buffer_size, k * every) for k in range(1, config.episodes // config.save_interval + 1)]


def project_run(measurements: Measurements, config: TrainingConfig, steps_per_episode: int = STEPS_PER_EPISODE,
                validation_steps: int = VALIDATION_STEPS) -> Projection | None:
    """The run's time from the measured loop speed of its setting and the measured run costs of its
    model. None when the loop speed of this setting, or the run costs of this model, were not
    measured (a user override); without any run costs (an older measurement) only the loop counts."""
    rate = planned_rate(measurements, config)
    if rate is None:
        return None
    loop_s = config.episodes * steps_per_episode / rate.transitions_per_s
    costs: RunCosts | None = measurements.run_costs
    if costs is None:
        return Projection(loop_s, 0.0, 0.0, 0.0, 0, 0, rate.transitions_per_s)
    if (costs.device, costs.model_size) != (device_kind(config.device), config.model_size):
        return None
    validations = validations_in_run(config)
    sizes = checkpoint_replay_sizes(config, steps_per_episode)
    validation_s = validations * costs.validation_s * validation_steps / costs.validation_steps
    checkpoint_s = len(sizes) * costs.checkpoint_s + sum(sizes) * costs.checkpoint_s_per_transition
    return Projection(loop_s, validation_s, checkpoint_s, costs.startup_s, validations, len(sizes),
                      rate.transitions_per_s)


def projected_train_seconds(measurements: Measurements, config: TrainingConfig,
                            steps_per_episode: int = STEPS_PER_EPISODE,
                            validation_steps: int = VALIDATION_STEPS) -> float | None:
    """``project_run``'s total: the run's ``train_seconds`` as measured beforehand (None: unmeasured)."""
    projection = project_run(measurements, config, steps_per_episode, validation_steps)
    return None if projection is None else projection.total_s

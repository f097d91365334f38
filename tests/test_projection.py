"""The planned run's time: the measured loop plus validations, checkpoints and start-up, counted from
the config and checked by hand arithmetic on made-up timings."""

from __future__ import annotations

import pytest

from nexlify.config import TrainingConfig
from nexlify.hardware.measurements import LoopRate, Measurements, RunCosts
from nexlify.hardware.projection import (
    VALIDATION_STEPS,
    checkpoint_replay_sizes,
    project_run,
    projected_train_seconds,
    validations_in_run,
)

CONFIG = TrainingConfig(model_size="small", batch_size=256, num_workers=1, episodes=95, eval_interval=10,
                        save_interval=30, buffer_size=100_000)
RATE = LoopRate("cpu", "small", 256, 1, 32, 6_000.0)
# One 100-bar validation 0.2 s; a checkpoint 0.05 s plus 1 microsecond per replay transition; 1.5 s start-up.
COSTS = RunCosts("cpu", "small", validation_s=0.2, validation_steps=100, checkpoint_s=0.05,
                 checkpoint_s_per_transition=1e-6, startup_s=1.5)


def test_counts_follow_the_config() -> None:
    assert validations_in_run(CONFIG) == 10  # at 10, 20, ..., 90, and once more where the run ends (95)
    assert validations_in_run(CONFIG.with_overrides({"episodes": 100})) == 10  # 100 is a multiple: no extra
    # Twice an episode: 0.5, 1, ..., 6; a third of one: 1/3 .. 1 exactly, with no float drift past 3.
    assert validations_in_run(CONFIG.with_overrides({"episodes": 6, "eval_interval": 0.5})) == 12
    assert validations_in_run(CONFIG.with_overrides({"episodes": 1, "eval_interval": 1 / 3})) == 3
    # checkpoint_ep30/60/90 hold 30,000, 60,000 and 90,000 transitions of 1,000-step episodes ...
    assert checkpoint_replay_sizes(CONFIG, 1_000) == [30_000, 60_000, 90_000]
    # ... and never more than the buffer holds
    assert checkpoint_replay_sizes(CONFIG, 3_000) == [90_000, 100_000, 100_000]


def test_projection_adds_validations_checkpoints_and_start_up_to_the_loop() -> None:
    measured = Measurements((RATE,), run_costs=COSTS)
    projection = project_run(measured, CONFIG, steps_per_episode=1_000, validation_steps=250)
    assert projection is not None
    assert projection.loop_s == pytest.approx(95 * 1_000 / 6_000)  # 15.833 s
    assert projection.validation_s == pytest.approx(10 * 0.2 * 250 / 100)  # 5.0 s: 250-bar validations
    assert projection.checkpoint_s == pytest.approx(3 * 0.05 + (30_000 + 60_000 + 90_000) * 1e-6)  # 0.33 s
    assert projection.startup_s == 1.5
    assert (projection.validations, projection.checkpoints) == (10, 3)
    total = 95_000 / 6_000 + 5.0 + 0.33 + 1.5
    assert projection.total_s == pytest.approx(total)
    assert projected_train_seconds(measured, CONFIG, 1_000, 250) == pytest.approx(total)
    assert projection.to_dict()["total_s"] == pytest.approx(total, abs=1e-3)
    # The standard run: 3,000-step episodes, validations of the standard length as measured.
    standard = project_run(Measurements((RATE,), run_costs=COSTS), CONFIG)
    assert standard is not None and standard.validation_s == pytest.approx(10 * 0.2 * VALIDATION_STEPS / 100)


def test_projection_without_the_settings_measurements() -> None:
    # Run costs measured for another model: the run differs from what was measured.
    assert project_run(Measurements((RATE,), run_costs=COSTS), CONFIG.with_overrides({"model_size": "tiny"})) is None
    assert project_run(Measurements((RATE,), run_costs=COSTS), CONFIG.with_overrides({"batch_size": 64})) is None
    # No run costs at all (measuring them failed): the loop alone.
    alone = project_run(Measurements((RATE,)), CONFIG, steps_per_episode=1_000)
    assert alone is not None and alone.total_s == pytest.approx(95_000 / 6_000) and alone.validations == 0


def test_run_costs_survive_the_cache_and_garbage_reads_as_none() -> None:
    measured = Measurements((RATE,), 1.0, run_costs=COSTS)
    assert Measurements.from_dict(measured.to_dict()) == measured
    broken = {**measured.to_dict(), "run_costs": {"device": "cpu", "model_size": "small", "validation_s": "x"}}
    assert Measurements.from_dict(broken).run_costs is None
    assert Measurements.from_dict(broken).rates == (RATE,)

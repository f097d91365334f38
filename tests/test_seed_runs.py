"""How many seeds of `nexlify train --seeds N` train at once: by hand from cores, threads and RAM."""

import pytest

from nexlify.config import TrainingConfig
from nexlify.hardware.plan import bytes_per_transition
from nexlify.training.seed_runs import GB, RUN_MEMORY_GB, run_memory_gb, seeds_at_once


def _cpu(threads: int, buffer: int = 100_000) -> TrainingConfig:
    return TrainingConfig(device="cpu", num_workers=threads, buffer_size=buffer)


def test_a_runs_memory_is_the_process_plus_its_replay_in_host_ram():
    config = _cpu(1, buffer=1_000_000)
    replay = 1_000_000 * bytes_per_transition(12, "float32") / GB
    assert run_memory_gb(config) == pytest.approx(RUN_MEMORY_GB + replay)
    on_card = TrainingConfig(device="cuda", buffer_size=1_000_000)  # replay on the GPU, not in RAM
    assert run_memory_gb(on_card) == RUN_MEMORY_GB
    trend = TrainingConfig(device="cpu", buffer_size=1_000_000, feature_set="trend")  # 18 numbers a state
    assert run_memory_gb(trend) == pytest.approx(RUN_MEMORY_GB + 1_000_000 * bytes_per_transition(18) / GB)


@pytest.mark.parametrize(("cores", "threads", "seeds", "at_once", "each"), [
    (16, 4, 3, 3, 4),   # three runs of four threads fit sixteen cores
    (16, 4, 8, 4, 4),   # sixteen cores hold four runs of four threads
    (2, 2, 3, 1, 2),    # the plan's two threads already fill two cores: one after another
    (2, 1, 3, 2, 1),    # one thread each: two runs side by side
    (16, 1, 2, 2, 1),   # never more runs than seeds
])
def test_seeds_at_once_from_cores_and_planned_threads(cores, threads, seeds, at_once, each):
    got, got_threads, why = seeds_at_once(_cpu(threads), seeds, cores, available_gb=64.0)
    assert (got, got_threads) == (at_once, each)
    assert ("one after another" in why) == (at_once == 1)


def test_ram_caps_the_runs_and_jobs_overrides_the_cores():
    config = _cpu(1, buffer=2_000_000)
    per_run = run_memory_gb(config)
    got, _, why = seeds_at_once(config, 8, 16, available_gb=2.5 * per_run)
    assert got == 2 and "GB free" in why
    assert seeds_at_once(_cpu(4), 8, 16, 64.0, requested=8)[:2] == (8, 2)  # asked: the cores are shared out
    assert seeds_at_once(_cpu(2), 3, 2, 64.0, requested=1)[:2] == (1, 2)


def test_gpu_seeds_take_turns_unless_asked():
    gpu = TrainingConfig(device="cuda", num_workers=4)
    assert seeds_at_once(gpu, 3, 16, 64.0) == (1, 4, "one after another (a GPU plan fills its card)")
    assert seeds_at_once(gpu, 3, 16, 64.0, requested=2)[:2] == (2, 4)

"""How many seeds of `nexlify train --seeds N` train at once: by hand from cores, threads and RAM."""

import pytest

from nexlify.config import TrainingConfig
from nexlify.hardware.plan import bytes_per_transition
from nexlify.hardware.side_by_side import RUN_MEMORY_GB
from nexlify.training.seed_runs import GB, run_memory_gb, seeds_at_once


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
    assert got == 2 and "the RAM holds 2" in why
    assert seeds_at_once(_cpu(4), 8, 16, 64.0, requested=8)[:2] == (8, 2)  # asked: the cores are shared out
    assert seeds_at_once(_cpu(2), 3, 2, 64.0, requested=1)[:2] == (1, 2)


def test_gpu_seeds_take_turns_unless_asked():
    gpu = TrainingConfig(device="cuda", num_workers=4)
    assert seeds_at_once(gpu, 3, 16, 64.0) == (1, 4, "one after another (a GPU plan fills its card)")
    assert seeds_at_once(gpu, 3, 16, 64.0, requested=2)[:2] == (2, 4)


def test_measured_speeds_choose_the_count_that_finishes_soonest():
    # This VM's profile: the large model at batch 256 ran 6,749 transitions/s on 1 thread, 9,970 on 2.
    rates = {1: 6749.3, 2: 9970.0}
    config = _cpu(2)
    # Two seeds: one run at 2 threads takes 2 / 9,970 per transition of a run, two at 1 thread 1 / 6,749.
    assert seeds_at_once(config, 2, 2, 64.0, rates=rates)[:2] == (2, 1)
    # Had the second thread doubled the speed, both would finish together: then one process at a time.
    assert seeds_at_once(config, 2, 2, 64.0, rates={1: 5000.0, 2: 10000.0})[:2] == (1, 2)
    # Three seeds on two cores: two rounds at 6,749 (2.96e-4) beat three at 9,970 (3.01e-4).
    got, threads, why = seeds_at_once(config, 3, 2, 64.0, rates=rates)
    assert (got, threads) == (2, 1) and "2 x 6,749 tr/s at 1 thread(s)" in why
    # Sixteen cores, four planned threads: a count whose threads were not measured (16 // 3 = 5 -> 4 planned)
    # runs at the planned speed, so four at once (one round) is soonest for four seeds.
    assert seeds_at_once(_cpu(4), 4, 16, 64.0, rates={1: 3000.0, 2: 5000.0, 4: 7000.0})[:2] == (4, 4)
    # RAM still caps the count.
    big = _cpu(1, buffer=2_000_000)
    assert seeds_at_once(big, 4, 16, 1.5 * run_memory_gb(big), rates={1: 3000.0})[:2] == (1, 1)

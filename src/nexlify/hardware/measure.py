"""Measure the real thing: short bursts of the real training loop at each candidate setting.

Each burst builds the real ``Trainer`` (the real ``AdaptiveDQNAgent``, the real vector env) on a small
synthetic market and times whole rounds of its loop: acting, env steps, storing and learning
interleaved at the planned replay ratio, with the parallel envs the planner would give that batch.
No second DQN and no fudge factor: the projection is the measured speed of the loop that trains.

The candidates: on a GPU the planned model (from the memory tiers) at every GPU batch; on the CPU
every model the RAM allows (small to large, dropping larger ones once one is hopeless) at each CPU
batch and each candidate thread count, thread counts interleaved so a busy spell of the machine
hits them alike. Everything runs under one time budget.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pandas as pd

from nexlify.config import MODEL_SIZES, TrainingConfig
from nexlify.data.features import MARKET_FEATURE_NAMES, FeatureScaler
from nexlify.data.market import MarketSlice, MarketSplits
from nexlify.hardware.cpu import thread_candidates
from nexlify.hardware.detect import Profile
from nexlify.hardware.measurements import LoopRate, Measurements
from nexlify.hardware.plan import (
    CPU_BATCH_SIZES,
    GPU_BATCH_SIZES,
    PLAN_TIME_BUDGET_S,
    REPLAY_RATIO,
    DeviceChoice,
    ModelChoice,
    choose_device,
    choose_parallel_envs,
    plan_training,
    ram_tier,
    standard_run_seconds,
)

# Rounds of 1 and of 1 + BURST_STEPS env steps are timed in pairs; their difference is the loop's cost
# per step without what a round costs once (a new vector env, a memory check), which a real round
# of thousands of steps spreads thin. Each step takes about one learning step.
BURST_STEPS = 4
MAX_PAIRS = 3  # at most; fewer when the slot's time is up
# Give up on bigger models once a smaller one already projects this many times over the plan's
# time budget: bigger ones are slower still, so measuring them only costs profile time.
SKIP_FACTOR = 4.0

# (config, budget seconds) -> transitions/s; tests inject fakes
BurstTimer = Callable[[TrainingConfig, float], float]


def synthetic_splits(steps: int = BURST_STEPS + 1, seed: int = 0) -> MarketSplits:
    """A random-walk market of ``steps + 1`` candles (one episode = ``steps`` steps) for bursts."""
    rng = np.random.default_rng(seed)
    n = steps + 1
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    stamps = (np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(1, "h")).astype("datetime64[ns]")
    features = rng.normal(0.0, 1.0, (n, len(MARKET_FEATURE_NAMES))).astype(np.float32)
    market = MarketSlice(stamps, close, close * 1.01, close * 0.99, close, np.ones(n), features)
    return MarketSplits(market, market, market, FeatureScaler(), pd.Timedelta("1h"), 8760.0)


def burst_config(device: str, model_size: str, batch_size: int, threads: int, parallel_envs: int) -> TrainingConfig:
    """The run's learning cadence for one candidate, with exploration at its floor (the greedy forward
    pass runs every step, as it does for most of a run) and no validation inside the burst."""
    return TrainingConfig(device=device, model_size=model_size, batch_size=batch_size, num_workers=threads,
                          parallel_envs=parallel_envs, train_frequency=max(1, batch_size // REPLAY_RATIO),
                          learning_starts=1, buffer_size=20_000, epsilon_start=0.05, epsilon_end=0.05,
                          episodes=10**6, eval_interval=10**6, save_interval=10**6, data_days=None)


def time_training_loop(config: TrainingConfig, budget_s: float) -> float:
    """Transitions per second of the real trainer's loop for ``config``: rounds of 1 and of
    1 + ``BURST_STEPS`` steps timed in pairs after a warm-up round (first allocations, thread pool)."""
    from nexlify.training.trainer import Trainer  # the trainer imports torch: only when measuring

    deadline = time.perf_counter() + budget_s
    envs = config.parallel_envs
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, synthetic_splits(), folder)

        def timed_round(steps: int) -> float:
            trainer.episode_steps = steps  # the round's length; the market holds the longest
            started = time.perf_counter()
            trainer.run_round(envs)
            return time.perf_counter() - started

        warm_up = timed_round(1 + BURST_STEPS)
        if time.perf_counter() >= deadline:
            # Hopelessly slow (a loaded machine at too many threads): the warm-up round, fixed costs
            # and all, is measurement enough and keeps the profile inside its budget.
            return envs * (1 + BURST_STEPS) / warm_up
        short: list[float] = []
        long: list[float] = []
        while len(long) < MAX_PAIRS and (not long or time.perf_counter() < deadline):
            short.append(timed_round(1))
            long.append(timed_round(1 + BURST_STEPS))
    per_step = (statistics.median(long) - statistics.median(short)) / BURST_STEPS
    if per_step <= 0:  # noise larger than the loop itself: fall back to whole rounds
        per_step = statistics.median(long) / (1 + BURST_STEPS)
    return envs / per_step


def _gpu_candidates(profile: Profile, dev: DeviceChoice) -> Iterator[tuple[str, int, int, int]]:
    """The planned model at every GPU batch from the tier's up, at the planner's host threads."""
    planned, _ = plan_training(replace(profile, benchmarks=Measurements()))
    tier = MODEL_SIZES.index(planned.model_size)
    for batch in GPU_BATCH_SIZES:
        envs = choose_parallel_envs(dev, ModelChoice(planned.model_size, batch, tier, "gpu-measured"),
                                    max(1, batch // REPLAY_RATIO)).value
        yield planned.model_size, batch, planned.num_workers, envs


def _cpu_candidates(profile: Profile, dev: DeviceChoice, model_size: str) -> Iterator[tuple[str, int, int, int]]:
    for batch in CPU_BATCH_SIZES:
        envs = choose_parallel_envs(dev, ModelChoice(model_size, batch, MODEL_SIZES.index(model_size), "cpu-measured"),
                                    max(1, batch // REPLAY_RATIO)).value
        for threads in thread_candidates(profile.cpu.compute_cores):
            yield model_size, batch, threads, envs


def warm_up_torch() -> float:
    """Pay torch's one-off costs before the clock starts; returns their seconds.

    The first ``torch.optim`` optimizer imports ``torch._dynamo`` (1-2 s on an idle 2-core box); the
    training run pays that once whoever comes first, so it belongs to neither the bursts nor the budget.
    """
    started = time.perf_counter()
    import torch

    import nexlify.training.trainer  # noqa: F401  # its imports too

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    return time.perf_counter() - started


def measure(profile: Profile, budget_s: float = 2.0, time_burst: BurstTimer = time_training_loop,
            model_sizes: tuple[str, ...] = MODEL_SIZES) -> Measurements:
    """Time the real loop at every candidate setting for ``profile``'s machine within ``budget_s``
    (torch's one-off start-up costs excluded: see ``warm_up_torch``)."""
    import torch

    if time_burst is time_training_loop:
        warm_up_torch()
    started = time.perf_counter()
    deadline = started + budget_s
    dev, _ = choose_device(profile)
    kind = dev.device.split(":")[0]
    if dev.gpu is not None:
        groups = [list(_gpu_candidates(profile, dev))]
    else:
        allowed = model_sizes[: ram_tier(profile.ram.total_gb) + 1] if ram_tier(profile.ram.total_gb) >= 1 \
            else ("tiny",)
        groups = [list(_cpu_candidates(profile, dev, size)) for size in allowed]
    slots = sum(len(g) for g in groups)
    per_slot = max(0.02, budget_s / max(1, slots))
    rates: list[LoopRate] = []
    errors: list[str] = []
    incomplete = False
    threads_before = torch.get_num_threads()
    try:
        for i, group in enumerate(groups):
            # The GPU's planned model is measured in full even out of time: its batch decides the plan.
            must = dev.gpu is not None and i == 0
            for size, batch, threads, envs in group:
                left = deadline - time.perf_counter()
                if left <= 0 and not must:
                    incomplete = True
                    break
                config = burst_config(dev.device, size, batch, threads, envs)
                try:
                    rate = time_burst(config, max(0.02, min(per_slot, left)))
                except Exception as exc:  # a device that fails mid-way keeps what it measured
                    errors.append(f"{kind}/{size}/batch {batch}/{threads} threads: {exc}")
                    continue
                rates.append(LoopRate(kind, size, batch, threads, envs, round(rate, 1)))
            best = max((r.transitions_per_s for r in rates if r.model_size == group[0][0]), default=0.0)
            if incomplete or standard_run_seconds(best) > SKIP_FACTOR * PLAN_TIME_BUDGET_S:
                break
    finally:
        torch.set_num_threads(threads_before)  # the agent sets the process-wide count; give it back
    return Measurements(tuple(rates), round(time.perf_counter() - started, 3), incomplete, tuple(errors))

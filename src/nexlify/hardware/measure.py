"""Measure the real thing: short bursts of the real training loop at each candidate setting.

Each burst builds the real ``Trainer`` (the real ``AdaptiveDQNAgent``, the real vector env) on a small
synthetic market and times whole rounds of its loop: acting, env steps, storing and learning
interleaved at the planned replay ratio, with the parallel envs the planner would give that batch.
No second DQN and no fudge factor: the projection is the measured speed of the loop that trains.

The candidates: on a GPU the planned model (from the memory tiers) at every GPU batch. On the CPU two
phases: every model the RAM allows (small to large, dropping larger ones once one is hopeless) at 1
thread, the smallest at each CPU batch and the larger ones at the batch that won; then the
provisional plan's model and batch at every candidate thread count, interleaved and repeated while
time is left, so the thread choice and the projection of the setting that will train rest on the
most samples. Everything runs under one time budget.

Then what a run spends beside its loop, on the planned setting's agent (``LoopTimer.run_costs``): one
greedy validation backtest of the standard validation length, one checkpoint with and one without
a full replay memory, and the first round's start-up. ``nexlify.hardware.projection`` multiplies
them by the counts the run's config implies.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.config import MODEL_SIZES, TrainingConfig
from nexlify.data.features import MARKET_FEATURE_NAMES, FeatureScaler
from nexlify.data.market import MarketSlice, MarketSplits
from nexlify.hardware.cpu import thread_candidates
from nexlify.hardware.detect import Profile
from nexlify.hardware.measurements import MEASURE_BUDGET_S, LoopRate, Measurements, RunCosts, device_kind
from nexlify.hardware.plan import (
    CPU_BATCH_SIZES,
    GPU_BATCH_SIZES,
    PLAN_TIME_BUDGET_S,
    REPLAY_RATIO,
    DeviceChoice,
    ModelChoice,
    choose_device,
    choose_optimization_level,
    choose_parallel_envs,
    choose_precision,
    plan_training,
    ram_tier,
    standard_run_seconds,
)
from nexlify.hardware.projection import VALIDATION_STEPS

# Rounds of 1 and of 1 + BURST_STEPS env steps are timed in pairs; their difference is the loop's cost
# per step without what a round costs once (a new vector env, a memory check), which a real round
# of thousands of steps spreads thin. Each step takes about one learning step.
BURST_STEPS = 4
# On a GPU a step takes milliseconds and the kernels run behind the host: four-step rounds drown in a
# round's fixed costs and launch jitter (H100 bursts measured a third of the run's speed).
GPU_BURST_STEPS = 16
# Rounds run back to back before a GPU setting is first timed: an idle GPU runs at a fraction of its
# clock until sustained work ramps it up, and a run is sustained work from its first seconds.
GPU_WARM_S = 0.3
GPU_MIN_TIMING_S = 0.4  # of pairs a GPU setting is timed for, whatever the budget left
MAX_PAIRS = 3  # at most; fewer when the slot's time is up
SURVEY_SHARE = 0.6  # of the CPU budget for the models and batches; the rest times the thread counts
# Of the budget, kept for the run costs (one validation backtest, two checkpoints) after the bursts.
RUN_COSTS_SHARE = 0.1
# Replay rows of a burst trainer: filled with random transitions once, to time a checkpoint's cost
# per transition of replay memory (the bursts themselves only ever hold a few hundred).
BURST_BUFFER = 65_536
# In the thread phase, a count measured under this share of the fastest is not timed again.
FOREGONE_SHARE = 0.5
# Give up on bigger models once a smaller one already projects this many times over the plan's
# time budget: bigger ones are slower still, so measuring them only costs profile time.
SKIP_FACTOR = 4.0

# (config, budget seconds) -> transitions/s; tests inject fakes
BurstTimer = Callable[[TrainingConfig, float], float]
# planned config -> what its run spends beside the loop; tests inject fakes
CostTimer = Callable[[TrainingConfig], RunCosts]
# (model, batch, threads, parallel envs) -> transitions/s of each burst
Samples = dict[tuple[str, int, int, int], list[float]]


def on_accelerator(device: str) -> bool:
    """Whether ``device`` is a GPU (CUDA, ROCm or MPS): its kernels run behind the host."""
    return device_kind(device) != "cpu"


def burst_steps(device: str) -> int:
    """Steps a long burst round adds to a short one on ``device``."""
    return GPU_BURST_STEPS if on_accelerator(device) else BURST_STEPS


def synchronize(device: str) -> None:
    """Wait for ``device``'s queued kernels: a round's clock must stop when its work is done, not
    when the host has merely queued it."""
    import torch

    kind = device_kind(device)
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def synthetic_splits(steps: int = BURST_STEPS + 1, seed: int = 0) -> MarketSplits:
    """A random-walk market of ``steps + 1`` candles (one episode = ``steps`` steps) for bursts."""
    rng = np.random.default_rng(seed)
    n = steps + 1
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    stamps = (np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(1, "h")).astype("datetime64[ns]")
    features = rng.normal(0.0, 1.0, (n, len(MARKET_FEATURE_NAMES))).astype(np.float32)
    market = MarketSlice(stamps, close, close * 1.01, close * 0.99, close, np.ones(n), features)
    return MarketSplits(market, market, market, FeatureScaler(), pd.Timedelta("1h"), 8760.0)


def burst_config(device: str, model_size: str, batch_size: int, threads: int, parallel_envs: int,
                 precision: str = "fp32", optimization_level: str = "balanced") -> TrainingConfig:
    """The run's learning cadence for one candidate, at the precision and optimization level the plan
    gives that device and model, with exploration at its floor (the greedy forward pass runs every
    step, as it does for most of a run) and no validation inside the burst."""
    return TrainingConfig(device=device, model_size=model_size, batch_size=batch_size, num_workers=threads,
                          parallel_envs=parallel_envs, train_frequency=max(1, batch_size // REPLAY_RATIO),
                          precision=precision, use_mixed_precision=precision != "fp32",
                          optimization_level=optimization_level,
                          learning_starts=1, buffer_size=BURST_BUFFER, epsilon_start=0.05, epsilon_end=0.05,
                          episodes=10**6, eval_interval=10**6, save_interval=10**6, data_days=None)


class LoopTimer:
    """Times the real trainer's loop, one trainer per setting kept for the timer's life, so repeated
    calls for a setting add samples without building and warming it up again. Use as a context
    manager (the trainers' scratch folder is removed at the end)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="nexlify-measure-")
        self._trainers: dict[tuple[str, str, int, int, int], Any] = {}
        self._warm_up_s: dict[tuple[str, str, int, int, int], float] = {}
        self._round_s: dict[tuple[str, str, int, int, int], list[float]] = {}  # warm rounds as long

    def __enter__(self) -> LoopTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._trainers.clear()
        self._folder.cleanup()

    def _trainer(self, config: TrainingConfig) -> Any:
        from nexlify.training.trainer import Trainer  # the trainer imports torch: only when measuring

        key = self._key(config)
        trainer = self._trainers.get(key)
        if trainer is None:
            steps = burst_steps(config.device)
            trainer = Trainer(config, synthetic_splits(1 + steps), Path(self._folder.name) / str(len(self._trainers)))
            self._trainers[key] = trainer
            self._warm_up_s[key] = self._round(trainer, 1 + steps)  # first allocations, the thread pool
            if on_accelerator(config.device):
                warm_until = time.perf_counter() + GPU_WARM_S
                while time.perf_counter() < warm_until:
                    self._round(trainer, 1 + steps)
        return trainer

    @staticmethod
    def _key(config: TrainingConfig) -> tuple[str, str, int, int, int]:
        return config.device, config.model_size, config.batch_size, config.num_workers, config.parallel_envs

    @staticmethod
    def _round(trainer: Any, steps: int) -> float:
        import torch

        torch.set_num_threads(trainer.config.num_workers)  # another setting's trainer may have changed it
        trainer.episode_steps = steps  # the round's length; the synthetic market holds the longest
        device = trainer.config.device
        synchronize(device)
        started = time.perf_counter()
        trainer.run_round(trainer.config.parallel_envs)
        synchronize(device)
        return time.perf_counter() - started

    def __call__(self, config: TrainingConfig, budget_s: float) -> float:
        """Transitions/s of the loop for ``config``: rounds of 1 and of 1 + ``burst_steps`` steps timed
        in pairs until ``budget_s`` is spent (at least one pair, at most ``MAX_PAIRS``)."""
        steps = burst_steps(config.device)
        gpu = on_accelerator(config.device)
        deadline = time.perf_counter() + budget_s
        fresh = self._trainers.get(self._key(config)) is None
        trainer = self._trainer(config)
        if fresh and not gpu and time.perf_counter() >= deadline:
            # Hopelessly slow (a loaded machine at too many threads): the warm-up round, fixed costs
            # and all, is measurement enough and keeps the profile near its budget. Not on a GPU: its
            # batches are timed even out of time (they decide the plan), and a first round's
            # allocations and kernel loads would make the fast ones look several times slower.
            return config.parallel_envs * (1 + steps) / self._warm_up_s[self._key(config)]
        # A GPU setting gets its pairs even out of time while they are quick: one pair of a fast setting
        # is within launch jitter of nothing, and the fastest setting is the one the run will train.
        minimum_until = time.perf_counter() + (GPU_MIN_TIMING_S if gpu else 0.0)
        short: list[float] = []
        long: list[float] = []
        while len(long) < MAX_PAIRS and (not long or time.perf_counter() < max(deadline, minimum_until)):
            short.append(self._round(trainer, 1))
            long.append(self._round(trainer, 1 + steps))
        self._round_s.setdefault(self._key(config), []).extend(long)
        per_step = _per_step_seconds(short, long, steps, gpu=gpu)
        return config.parallel_envs / per_step


    def startup_s(self) -> float:
        """The first trainer's warm-up round beyond its fastest warm round of the same length: the
        process's one-off costs of the loop (thread pool, first kernels and allocations), which a
        training process pays in its first round."""
        first = next(iter(self._trainers), None)
        if first is None or not self._round_s.get(first):
            return 0.0
        return max(0.0, self._warm_up_s[first] - min(self._round_s[first]))

    def run_costs(self, planned: TrainingConfig) -> RunCosts:
        """What a run of ``planned`` spends beside its loop, timed once each on the agent of its
        setting (measured already, so its optimizer holds state as in a run): a greedy validation
        backtest of ``VALIDATION_STEPS`` bars, and checkpoints (with the planned compression) without
        its replay and with the replay filled to ``BURST_BUFFER`` with random transitions; their
        difference over the rows is the cost per transition of replay."""
        import torch

        from nexlify.training.trainer import evaluate_agent

        config = burst_config(planned.device, planned.model_size, planned.batch_size, planned.num_workers,
                              planned.parallel_envs, planned.precision, planned.optimization_level)
        trainer = self._trainer(config)
        agent = trainer.agent
        torch.set_num_threads(config.num_workers)
        started = time.perf_counter()
        evaluate_agent(agent, synthetic_splits(VALIDATION_STEPS).validation, 8760.0, trainer.config)
        validation_s = time.perf_counter() - started
        agent.config = agent.config.with_overrides({"checkpoint_compression": planned.checkpoint_compression})
        path = Path(self._folder.name) / "checkpoint.pth"
        # Without its replay, then with a full one: the bursts may have filled the replay almost to
        # capacity already, so a difference against what it held would divide noise by a few rows.
        without_replay = self._time_save(agent, path, include_replay=False)
        _fill_replay(agent.replay)
        with_replay = self._time_save(agent, path, include_replay=True)
        per_transition = max(0.0, (with_replay - without_replay) / len(agent.replay))
        return RunCosts(device_kind(planned.device), planned.model_size, validation_s, VALIDATION_STEPS,
                        without_replay, per_transition, self.startup_s())

    @staticmethod
    def _time_save(agent: Any, path: Path, include_replay: bool) -> float:
        started = time.perf_counter()
        agent.save(path, include_replay=include_replay)
        return time.perf_counter() - started


def _per_step_seconds(short: list[float], long: list[float], steps: int, gpu: bool) -> float:
    """Seconds per loop step from paired rounds of 1 and 1 + ``steps`` steps.

    On the CPU the mean difference: the run lives with the machine's load as the bursts saw it. On a
    GPU the fastest round of each length: a step is milliseconds, and host-side hiccups (a thread
    descheduled, the collector) only ever add time, which a few rounds cannot average out, while a
    run of thousands of queued steps absorbs them.
    """
    per_step = ((min(long) - min(short)) / steps if gpu
                else (sum(long) - sum(short)) / (len(long) * steps))
    if per_step <= 0:  # noise larger than the loop itself: fall back to whole rounds
        per_step = (min(long) if gpu else sum(long) / len(long)) / (1 + steps)
    return per_step


def _fill_replay(replay: Any) -> None:
    """Fill ``replay`` to its capacity with random transitions (random, so compression sees realistic
    bytes), from a generator of its own so no one's random stream moves."""
    import torch

    rows, size = replay.capacity - len(replay), replay.state_size
    gen = torch.Generator().manual_seed(0)
    replay.add_batch(torch.rand(rows, size, generator=gen), torch.randint(0, 3, (rows,), generator=gen),
                     torch.rand(rows, generator=gen), torch.rand(rows, size, generator=gen), torch.zeros(rows))


def _gpu_candidates(profile: Profile, dev: DeviceChoice) -> Iterator[tuple[str, int, int, int]]:
    """The planned model at every GPU batch from the tier's up, at the planner's host threads."""
    planned, _ = plan_training(replace(profile, benchmarks=Measurements()))
    tier = MODEL_SIZES.index(planned.model_size)
    for batch in GPU_BATCH_SIZES:
        envs = choose_parallel_envs(dev, ModelChoice(planned.model_size, batch, tier, "gpu-measured"),
                                    max(1, batch // REPLAY_RATIO)).value
        yield planned.model_size, batch, planned.num_workers, envs


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


def _gpu_measure(profile: Profile, dev: DeviceChoice, deadline: float, time_burst: BurstTimer,
                 samples: Samples, errors: list[str]) -> None:
    """The planned model at every GPU batch, each measured even out of time: its batch decides the plan."""
    for size, batch, threads, envs in _gpu_candidates(profile, dev):
        _sample(dev, size, batch, threads, envs, max(0.02, deadline - time.perf_counter()), time_burst, samples,
                errors)


def _sample(dev: DeviceChoice, size: str, batch: int, threads: int, envs: int, budget_s: float,
            time_burst: BurstTimer, samples: Samples,
            errors: list[str]) -> None:
    try:
        rate = time_burst(burst_config(dev.device, size, batch, threads, envs, *_machine_settings(dev, size, batch)),
                          budget_s)
    except Exception as exc:  # a device that fails mid-way keeps what it measured
        errors.append(f"{device_kind(dev.device)}/{size}/batch {batch}/{threads} threads: {exc}")
        return
    samples.setdefault((size, batch, threads, envs), []).append(rate)


def _machine_settings(dev: DeviceChoice, size: str, batch: int) -> tuple[str, str]:
    """(precision, optimization level) the plan gives ``size`` on ``dev``: a GPU burst runs bf16 or
    fp16 and TF32 as the run will, not fp32."""
    model = ModelChoice(size, batch, MODEL_SIZES.index(size), "gpu-measured" if dev.gpu else "cpu-measured")
    precision = next(d.value for d in choose_precision(dev) if d.key == "precision")
    return precision, choose_optimization_level(model, dev).value


def _cpu_measure(profile: Profile, dev: DeviceChoice, model_sizes: tuple[str, ...], budget_s: float,
                 deadline: float, time_burst: BurstTimer, samples: Samples,
                 errors: list[str]) -> bool:
    """Two phases; returns whether the first ran out of time. First every model the RAM allows (small to
    large, dropping larger ones once one is hopeless) at 1 thread, which is never pathologically slow:
    the smallest at each CPU batch, the larger ones at the batch that won; then the provisional plan's
    model and batch at every candidate thread count, interleaved and repeated while time is left, so
    the thread choice and the projection of the setting that will train rest on the most samples."""
    tier = ram_tier(profile.ram.total_gb)
    allowed = model_sizes[: tier + 1] if tier >= 1 else ("tiny",)
    first_deadline = time.perf_counter() + SURVEY_SHARE * budget_s
    per_slot = SURVEY_SHARE * budget_s / max(1, len(CPU_BATCH_SIZES) + len(allowed) - 1)
    incomplete = False
    batches = CPU_BATCH_SIZES
    for size in allowed:
        for batch, envs in _cpu_settings(dev, size, batches):
            left = first_deadline - time.perf_counter()
            if left <= 0 and samples:
                incomplete = True
                break
            _sample(dev, size, batch, 1, envs, max(0.02, min(per_slot, left)), time_burst, samples, errors)
        rates = {k[1]: statistics.median(v) for k, v in samples.items() if k[0] == size}
        if incomplete or not rates or standard_run_seconds(max(rates.values())) > SKIP_FACTOR * PLAN_TIME_BUDGET_S:
            break
        # A larger model spends more of each step in the network, where a larger batch costs less per
        # sample, never more: the batch that ran fastest for the smaller model runs fastest for the larger
        # ones too. Only it is measured from here on; the others' outcome is foregone.
        batches = (max(rates, key=lambda b: rates[b]),)
    planned, _ = plan_training(replace(profile, benchmarks=_measurements(dev, samples)))
    envs = next(e for b, e in _cpu_settings(dev, planned.model_size) if b == planned.batch_size)
    counts = thread_candidates(profile.cpu.compute_cores)
    per_slot = max(0.02, (deadline - time.perf_counter()) / (len(counts) * MAX_PAIRS))
    rounds = 0
    while rounds == 0 or (rounds < MAX_PAIRS and time.perf_counter() < deadline):
        for threads in counts:  # interleaved: a busy spell of the machine hits every count alike
            _sample(dev, planned.model_size, planned.batch_size, threads, envs, per_slot, time_burst, samples, errors)
        rounds += 1
        rates = {t: statistics.median(v) for t in counts
                 if (v := samples.get((planned.model_size, planned.batch_size, t, envs)))}
        # A count already this far behind the fastest stays behind: timing it again only costs the
        # budget (a pair at the slow count can take longer than the rest of the profile).
        counts = [t for t in counts if rates.get(t, 0.0) >= FOREGONE_SHARE * max(rates.values(), default=0.0)]
    return incomplete


def _cpu_settings(dev: DeviceChoice, size: str, batches: tuple[int, ...] = CPU_BATCH_SIZES) -> list[tuple[int, int]]:
    """(batch, parallel envs the planner gives it) for each of ``batches``."""
    return [(batch, choose_parallel_envs(dev, ModelChoice(size, batch, MODEL_SIZES.index(size), "cpu-measured"),
                                         max(1, batch // REPLAY_RATIO)).value) for batch in batches]


def _measurements(dev: DeviceChoice, samples: Samples, duration_s: float | None = None,
                  incomplete: bool = False, errors: tuple[str, ...] = ()) -> Measurements:
    kind = device_kind(dev.device)
    rates = tuple(LoopRate(kind, size, batch, threads, envs, round(statistics.median(values), 1))
                  for (size, batch, threads, envs), values in samples.items())
    return Measurements(rates, duration_s, incomplete, errors)


def measure(profile: Profile, budget_s: float = MEASURE_BUDGET_S, time_burst: BurstTimer | None = None,
            model_sizes: tuple[str, ...] = MODEL_SIZES, time_costs: CostTimer | None = None) -> Measurements:
    """Time the real loop at the candidate settings for ``profile``'s machine, then the planned run's
    costs beside the loop, within about ``budget_s`` (torch's one-off start-up costs excluded: see
    ``warm_up_torch``). ``time_burst`` and ``time_costs``: stand-ins for the real ``LoopTimer`` (tests;
    without ``time_costs`` no run costs are measured)."""
    import torch

    if time_burst is None:
        warm_up_torch()
        with LoopTimer() as timer:
            return measure(profile, budget_s, timer, model_sizes, timer.run_costs)
    started = time.perf_counter()
    deadline = started + (1.0 - RUN_COSTS_SHARE) * budget_s
    dev, _ = choose_device(profile)
    samples: Samples = {}
    errors: list[str] = []
    incomplete = False
    threads_before = torch.get_num_threads()
    try:
        if dev.gpu is not None:
            _gpu_measure(profile, dev, deadline, time_burst, samples, errors)
        else:
            incomplete = _cpu_measure(profile, dev, model_sizes, (1.0 - RUN_COSTS_SHARE) * budget_s, deadline,
                                      time_burst, samples, errors)
        costs = None if time_costs is None else _run_costs(profile, dev, samples, time_costs, errors)
    finally:
        torch.set_num_threads(threads_before)  # the agent sets the process-wide count; give it back
    return replace(_measurements(dev, samples, round(time.perf_counter() - started, 3), incomplete, tuple(errors)),
                   run_costs=costs)


def _run_costs(profile: Profile, dev: DeviceChoice, samples: Samples, time_costs: CostTimer,
               errors: list[str]) -> RunCosts | None:
    """The planned run's costs beside the loop (None when nothing was measured or timing them failed)."""
    if not samples:
        return None
    planned, _ = plan_training(replace(profile, benchmarks=_measurements(dev, samples)))
    try:
        return time_costs(planned)
    except Exception as exc:  # the projection then counts the loop alone; the plan stands
        errors.append(f"run costs of {planned.model_size} on {device_kind(planned.device)}: {exc}")
        return None


def time_thread_counts(config: TrainingConfig, counts: list[int], budget_s: float = 1.0) -> dict[int, float]:
    """Transitions/s of the real loop at ``config``'s setting for each torch thread count, interleaved
    and repeated within about ``budget_s`` (what a training run calls when it falls behind its
    projection: seconds, not a whole round at a thread count that may be ten times slower)."""
    import torch

    threads_before = torch.get_num_threads()
    samples: dict[int, list[float]] = {n: [] for n in counts}
    deadline = time.perf_counter() + budget_s
    per_slot = budget_s / (len(counts) * MAX_PAIRS)
    try:
        with LoopTimer() as timer:
            while not samples[counts[-1]] or (len(samples[counts[-1]]) < MAX_PAIRS and time.perf_counter() < deadline):
                for n in counts:
                    setting = burst_config(config.device, config.model_size, config.batch_size, n,
                                           config.parallel_envs, config.precision, config.optimization_level)
                    samples[n].append(timer(setting, per_slot))
    finally:
        torch.set_num_threads(threads_before)
    return {n: statistics.median(v) for n, v in samples.items()}

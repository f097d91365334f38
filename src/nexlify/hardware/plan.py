"""The training plan: a pure function from a hardware ``Profile`` to a ``TrainingConfig`` plus reasons.

``plan_training(profile)`` reads nothing but its argument (no detection, no clock, no randomness),
so the same profile always gives the same plan and the guide's examples are plain unit tests.

Tiers (the guide's Hardware Optimization Matrix; sizes in GB of 2**30 bytes)::

    tier        model   batch (low/high)  buffer   RAM total   VRAM (total)     CPU-only cores
    budget      tiny    16 / 16           25_000   <= 4.5      -                -
    entry       small   32 / 64           50_000   <= 8.5      0.75 - 2.5       <= 2
    mid         medium  64 / 128          100_000  <= 16.5     2.5 - 5.5        3 - 8
    high        large   128 / 256         250_000  <= 32.5     5.5 - 11.5       > 8
    enthusiast  xlarge  256 / 512         500_000  > 32.5      >= 11.5          never (no benchmark)

Derived rules (the worked examples win where the guide contradicts itself):

    key                     rule
    device                  best usable GPU by VRAM ("cuda" also for ROCm, "mps" for Apple); a GPU
                            under 0.75 GB, or one torch cannot use (CPU-only build), -> "cpu"
    model_size              GPU: min(RAM tier, VRAM tier)  (Ex2: 16 GB RAM caps a 6 GB 1660 at medium;
                            Ex5: a 2 GB 1050 caps 64 GB RAM at small). CPU with benchmarks and
                            > 4.5 GB RAM: the largest model (up to the RAM tier) whose measured
                            update throughput trains the standard workload (1000 episodes x 3000 steps
                            = 3M transitions x REPLAY_RATIO gradient samples, +30% for acting and
                            sampling) within PLAN_TIME_BUDGET_S. CPU without: min(RAM tier, cores tier)
    batch_size              high end of the tier's range on a comfortable GPU (Ex2 128, Ex3 256,
                            Ex4 512); low end on CPU or a GPU under 3.5 GB (Ex5 32: "GPU limited");
                            with CPU benchmarks: the fastest measured batch of the chosen model;
                            with GPU benchmarks (not conserve): the smallest measured batch >= the
                            tier's that trains the standard run within GPU_PLAN_TIME_BUDGET_S
                            with GPU_BUDGET_MARGIN to spare;
                            unmeasured larger benchmark batches extrapolated at the same time per
                            step when the profiler ran out of time; else the fastest measured
    gradient_accumulation   budget tier or gpu_conserve: accumulate up to an effective batch of 64
                            (Ex1 16 x 4; Ex5 32 x 2); else 1
    train_frequency         batch x accumulation / REPLAY_RATIO (>= 1): the same gradient samples per
                            transition on every machine; stronger hardware = fewer, bigger updates
    learning_starts         min(10_000, buffer / 2) transitions, at least 2 effective batches
    target_update_interval  2_000 transitions / train_frequency learning steps, so the target network
                            refreshes every ~2_000 transitions on every machine
    buffer_size             tier of min(RAM-total tier, available-RAM tier, high unless xlarge):
                            available < 2/4/8/16 GB -> budget/entry/mid/high; 500K only paired with
                            the xlarge model (Ex5: 64 GB RAM + small model -> 250K; Ex4 -> 500K).
                            Then capped so buffer x bytes_per_transition <= 25% of available RAM (and
                            of free VRAM on a discrete GPU, where the trainer may keep the replay)
    replay_state_dtype      float32; float16 only when the float32 buffer would break that cap
    memory_reserve_gb       10% of RAM, clamped to 0.5 - 2 GB
    use_mixed_precision /   NVIDIA: bf16 from CC 8.0; fp16 (+ loss scaler) on CC 7.x cards that really
    precision               have tensor cores (not GTX 16xx / TU117); AMD: bf16 on CDNA2+/RDNA3+;
                            never on CPU; MPS stays fp32 (autocast on MPS gains little for these small
                            MLPs and its fp16 coverage is still uneven across macOS versions)
    optimization_level      cpu_optimize (no usable GPU), gpu_conserve (VRAM < 3.5 GB: the agent keeps
                            the replay memory in host RAM), max_performance (GPU and model tier >= high:
                            TF32 matmuls), balanced (other GPU)
    num_workers             torch intra-op threads. CPU: min(physical, usable) cores, or fewer when the
                            benchmark measured fewer threads faster (loaded machine). GPU: half the
                            physical cores, at most 16 (Ex5: 32 cores -> 16), never above usable
    parallel_envs           vector envs step every account as arrays in ONE thread (numpy on the CPU,
                            torch tensors on the GPU), so they cost no extra cores. CPU:
                            train_frequency clamped to 16-64 (one vector step feeds one learning
                            step); gpu_conserve: train_frequency, at least 8 (Ex5 8);
                            GPU >= 40 GB (data centre): 8 x VRAM GB rounded down to a power of two,
                            256-4096, at least train_frequency; other GPUs: train_frequency (4-4096)
                            when the batch came from GPU benchmarks, else 4 (Ex4)
    checkpoint_compression  budget tier (Ex1), or < 10 GB free disk, or an HDD / network output dir
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nexlify.config import MODEL_SIZES, TrainingConfig, replay_bytes_per_transition
from nexlify.data.feature_names import STATE_SIZE
from nexlify.errors import ConfigError
from nexlify.hardware.detect import GpuDevice, Profile
from nexlify.hardware.measurements import LoopRate
from nexlify.hardware.units import GB

REPLAY_RATIO = 8  # gradient samples per collected transition, identical on every machine
STANDARD_EPISODES = 1000
STEPS_PER_EPISODE = 3000
STANDARD_TRANSITIONS = STANDARD_EPISODES * STEPS_PER_EPISODE
PLAN_TIME_BUDGET_S = 600.0  # CPU plans pick the largest model that trains the standard run in this
# GPU plans with measurements take the smallest measured batch (the most learning steps) that still
# trains the standard run in this; a data-centre card reaches it at a few thousand samples a batch.
GPU_PLAN_TIME_BUDGET_S = 60.0
# A smaller batch counts as fitting only with this much to spare: on an H100 the run's loop at batch
# 2048 ran at 0.67x its profiler bursts (at 8192, 1.05x), and its bursts varied by +-20% from one cold
# profile to the next; without the margin the plan flipped between 2048 (a 90 s run) and 8192 (41 s).
GPU_BUDGET_MARGIN = 1.5
# Batches the profiler times in the real loop: the CPU picks the faster; a GPU is only busy at large ones.
CPU_BATCH_SIZES: tuple[int, ...] = (64, 256)
GPU_BATCH_SIZES: tuple[int, ...] = (512, 2048, 8192)
BUFFER_MEMORY_FRACTION = 0.25
TARGET_REFRESH_TRANSITIONS = 2_000
LEARNING_STARTS_TRANSITIONS = 10_000
EFFECTIVE_BATCH_FLOOR = 64  # accumulation target on memory-starved machines
GPU_MIN_VRAM_GB = 0.75
GPU_CONSERVE_VRAM_GB = 3.5
DATACENTRE_VRAM_GB = 40.0


@dataclass(frozen=True)
class Tier:
    """One row of the guide's hardware matrix."""

    name: str
    model_size: str
    batch_low: int
    batch_high: int
    buffer_size: int


TIERS: tuple[Tier, ...] = (
    Tier("budget", "tiny", 16, 16, 25_000),
    Tier("entry", "small", 32, 64, 50_000),
    Tier("mid", "medium", 64, 128, 100_000),
    Tier("high", "large", 128, 256, 250_000),
    Tier("enthusiast", "xlarge", 256, 512, 500_000),
)
_RAM_TOTAL_LIMITS = (4.5, 8.5, 16.5, 32.5)  # <= limit -> that tier
_RAM_AVAILABLE_LIMITS = (2.0, 4.0, 8.0, 16.0)  # < limit -> that tier
_VRAM_LIMITS = (2.5, 5.5, 11.5)  # entry <= 2.5 < mid < 5.5 <= high < 11.5 <= enthusiast


@dataclass(frozen=True)
class Decision:
    """One planned key, its value and the human reason for it."""

    key: str
    value: Any
    reason: str

    def __str__(self) -> str:
        value = f"{self.value:,}" if isinstance(self.value, int) and not isinstance(self.value, bool) \
            else self.value
        return f"{self.key} {value}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# facts shared with the profiler
# ---------------------------------------------------------------------------------------------
def bytes_per_transition(state_size: int = STATE_SIZE, state_dtype: str = "float32") -> int:
    """Replay bytes per transition, as the replay memory itself counts them (one place for the fact)."""
    return replay_bytes_per_transition(state_size, state_dtype)


def standard_run_seconds(transitions_per_s: float) -> float:
    """Projected training time of the standard workload at a measured real-loop speed."""
    return STANDARD_TRANSITIONS / transitions_per_s if transitions_per_s > 0 else math.inf


def _tier_le(value: float, limits: tuple[float, ...]) -> int:
    return next((i for i, lim in enumerate(limits) if value <= lim), len(limits))


def ram_tier(total_gb: float) -> int:
    """Matrix tier index from total RAM (the model-size table)."""
    return _tier_le(total_gb, _RAM_TOTAL_LIMITS)


def available_tier(available_gb: float) -> int:
    """Tier index that the RAM free right now supports for the replay buffer."""
    return next((i for i, lim in enumerate(_RAM_AVAILABLE_LIMITS) if available_gb < lim), 4)


def vram_tier(vram_gb: float) -> int | None:
    """Tier index from VRAM (the guide's FAQ), None when too small to be worth using."""
    if vram_gb < GPU_MIN_VRAM_GB:
        return None
    entry_max, mid_max, high_max = _VRAM_LIMITS
    return 1 if vram_gb <= entry_max else 2 if vram_gb < mid_max else 3 if vram_gb < high_max else 4


def cores_tier(usable_cores: int) -> int:
    """Tier index a CPU-only machine can drive without measurements."""
    return 1 if usable_cores <= 2 else 2 if usable_cores <= 8 else 3


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def _ram_text(profile: Profile) -> str:
    return f"{profile.ram.total_gb:g} GB RAM ({profile.ram.available_gb:.1f} GB free)"


# ---------------------------------------------------------------------------------------------
# device
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceChoice:
    """The planned device; ``gpu`` is the chosen card (None on the CPU)."""

    device: str
    backend: str | None = None
    gpu: GpuDevice | None = None

    @property
    def vram_gb(self) -> float:
        return self.gpu.vram_gb if self.gpu else 0.0

    @property
    def unified(self) -> bool:
        """GPU memory shared with the host (Apple): no separate VRAM to budget."""
        return self.gpu is not None and (self.gpu.unified_memory or self.backend == "mps")

    @property
    def conserve(self) -> bool:
        """A discrete GPU too small for the tier's batch: small batches, replay in host RAM."""
        return self.gpu is not None and not self.unified and self.vram_gb < GPU_CONSERVE_VRAM_GB


def choose_device(profile: Profile) -> tuple[DeviceChoice, Decision]:
    """The usable GPU with the most VRAM (first wins ties), unless it is under ``GPU_MIN_VRAM_GB``."""
    gpu = profile.gpu
    if gpu.devices:
        idx, dev = max(enumerate(gpu.devices), key=lambda item: (item[1].vram_gb, -item[0]))
        if vram_tier(dev.vram_gb) is not None:
            device = "mps" if gpu.backend == "mps" else ("cuda" if idx == 0 else f"cuda:{idx}")
            choice = DeviceChoice(device, gpu.backend, dev)
            via = {"rocm": " via ROCm (torch calls it cuda)", "mps": " via Metal (MPS)"}.get(gpu.backend or "", "")
            memory = "unified memory" if choice.unified else "VRAM"
            return choice, Decision("device", device, f"{dev.name} with {dev.vram_gb:g} GB {memory}{via}")
    if gpu.unusable_devices:
        bad = gpu.unusable_devices[0]
        why = f"{bad.name} found but unusable: {bad.reason or 'unknown reason'}"
    elif gpu.devices:
        why = f"{gpu.devices[0].name} has under {GPU_MIN_VRAM_GB} GB VRAM, the CPU is the safer bet"
    else:
        why = "no GPU that torch can use"
    return DeviceChoice("cpu"), Decision("device", "cpu", why)


# ---------------------------------------------------------------------------------------------
# model and batch
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelChoice:
    """The planned model and batch, the matrix tier they sit in, and where the batch came from
    (``source``: "tier", "cpu-measured" or "gpu-measured")."""

    model_size: str
    batch_size: int
    tier_index: int
    source: str = "tier"

    @property
    def tier(self) -> Tier:
        return TIERS[self.tier_index]


def _cpu_measured_choice(profile: Profile, max_tier: int) -> tuple[LoopRate, float, bool] | None:
    """(burst, projected seconds, fits budget) from the real loop's measured CPU speed: the largest
    model (up to ``max_tier``) that trains the standard run within the budget, at its fastest batch."""
    options = [rate for size in MODEL_SIZES[: max_tier + 1]
               for batch in sorted({r.batch_size for r in profile.benchmarks.rates})
               if (rate := profile.benchmarks.best("cpu", size, batch)) is not None]
    if not options:
        return None
    fitting = [r for r in options if standard_run_seconds(r.transitions_per_s) <= PLAN_TIME_BUDGET_S]
    if fitting:
        largest = max(MODEL_SIZES.index(r.model_size) for r in fitting)
        best = max((r for r in fitting if MODEL_SIZES.index(r.model_size) == largest),
                   key=lambda r: r.transitions_per_s)
        return best, standard_run_seconds(best.transitions_per_s), True
    best = min(options, key=lambda r: (MODEL_SIZES.index(r.model_size), -r.transitions_per_s))
    return best, standard_run_seconds(best.transitions_per_s), False


def fits_gpu_budget(seconds: float) -> bool:
    """Whether a standard run projected at ``seconds`` fits the GPU budget with the margin to spare."""
    return seconds * GPU_BUDGET_MARGIN <= GPU_PLAN_TIME_BUDGET_S


def _gpu_measured_choice(profile: Profile, device: str, model: str,
                         min_batch: int) -> tuple[int, float, str] | None:
    """(batch, projected seconds, how) from the real loop's measured speed on the GPU for ``model``.

    Bigger batches keep a GPU busier but, at a fixed replay ratio, mean fewer learning steps; so the
    smallest batch (at least the tier's) that fits the GPU time budget, with its margin, wins
    (how = "measured"). When none measured fits and the profiler did not get to the larger batches
    (out of time), those are extrapolated from the largest measured one at the same time per step,
    the most a bigger batch can gain (how = "extrapolated"). Else the fastest measured (how =
    "fastest").
    """
    rates = {b: r.transitions_per_s for b in GPU_BATCH_SIZES
             if b >= min_batch and (r := profile.benchmarks.best(device, model, b)) is not None}
    if not rates:
        return None
    fitting = sorted(b for b, r in rates.items() if fits_gpu_budget(standard_run_seconds(r)))
    if fitting:
        return fitting[0], standard_run_seconds(rates[fitting[0]]), "measured"
    largest = max(rates)
    if profile.benchmarks.incomplete:
        for b in (b for b in GPU_BATCH_SIZES if b > largest):
            secs = standard_run_seconds(rates[largest] * b / largest)
            if fits_gpu_budget(secs):
                return b, secs, "extrapolated"
    batch = max(rates, key=lambda b: rates[b])
    return batch, standard_run_seconds(rates[batch]), "fastest"


def _choose_gpu_model_and_batch(profile: Profile, dev: DeviceChoice) -> tuple[ModelChoice, list[Decision]]:
    r_tier = ram_tier(profile.ram.total_gb)
    v_tier = vram_tier(dev.vram_gb) or 1
    tier_idx = min(r_tier, v_tier)
    tier = TIERS[tier_idx]
    memory = "unified memory" if dev.unified else "VRAM"
    limiter = "both agree" if r_tier == v_tier else f"the {'RAM' if r_tier < v_tier else memory} limits"
    model = Decision("model_size", tier.model_size,
                     f"{tier.name} tier: {_ram_text(profile)} -> {TIERS[r_tier].name}, {dev.vram_gb:g} GB "
                     f"{memory} -> {TIERS[v_tier].name}; {limiter}")
    if dev.conserve:
        why = f"low end of the {tier.name} range: only {dev.vram_gb:g} GB VRAM (GPU limited)"
        batch = Decision("batch_size", tier.batch_low, why)
        return ModelChoice(tier.model_size, tier.batch_low, tier_idx), [model, batch]
    measured = _gpu_measured_choice(profile, dev.device, tier.model_size, tier.batch_high)
    if measured is None:
        return ModelChoice(tier.model_size, tier.batch_high, tier_idx), [model, Decision(
            "batch_size", tier.batch_high,
            f"high end of the {tier.name} range: {dev.vram_gb:g} GB on the GPU holds it comfortably")]
    batch, secs, how = measured
    size = tier.model_size
    within = (f"trains {STANDARD_EPISODES} episodes of {size} within {GPU_PLAN_TIME_BUDGET_S:.0f} s on the GPU "
              f"with {GPU_BUDGET_MARGIN:g}x to spare")
    why = {"measured": f"smallest measured batch that {within} (~{secs:.0f} s projected)",
           "extrapolated": f"smallest benchmark batch that {within} (~{secs:.0f} s, extrapolated from a "
                           "smaller measured batch: the profiler ran out of time)",
           "fastest": f"fastest measured batch for {size} on the GPU (~{secs:.0f} s projected for "
                      f"{STANDARD_EPISODES} episodes)"}[how]
    return ModelChoice(size, batch, tier_idx, "gpu-measured"), [model, Decision("batch_size", batch, why)]


def _choose_cpu_model_and_batch(profile: Profile) -> tuple[ModelChoice, list[Decision]]:
    r_tier = ram_tier(profile.ram.total_gb)
    measured = _cpu_measured_choice(profile, r_tier) if r_tier >= 1 else None
    if measured is not None:
        rate, secs, fits = measured
        size = rate.model_size
        if fits:
            why = (f"largest model (RAM allows up to {TIERS[r_tier].model_size}) whose measured training loop "
                   f"runs {STANDARD_EPISODES} episodes in ~{secs / 60:.0f} min "
                   f"(budget {PLAN_TIME_BUDGET_S / 60:.0f} min)")
        else:
            why = (f"no model fits the {PLAN_TIME_BUDGET_S / 60:.0f} min budget on this CPU; "
                   f"the smallest projects ~{secs / 60:.0f} min for {STANDARD_EPISODES} episodes")
        return ModelChoice(size, rate.batch_size, MODEL_SIZES.index(size), "cpu-measured"), [
            Decision("model_size", size, why),
            Decision("batch_size", rate.batch_size,
                     f"fastest measured batch for {size}: {rate.transitions_per_s:,.0f} transitions/s in the "
                     f"real training loop (~{secs / 60:.1f} min projected)")]
    usable = profile.cpu.usable_cores
    c_tier = cores_tier(usable)
    tier_idx = min(r_tier, c_tier)
    tier = TIERS[tier_idx]
    limiter = "both agree" if r_tier == c_tier else f"the {'RAM' if r_tier < c_tier else 'CPU'} limits"
    return ModelChoice(tier.model_size, tier.batch_low, tier_idx), [
        Decision("model_size", tier.model_size,
                 f"{tier.name} tier: {_ram_text(profile)} -> {TIERS[r_tier].name}, {usable} usable cores and "
                 f"no GPU -> {TIERS[c_tier].name}; {limiter} (no benchmark data)"),
        Decision("batch_size", tier.batch_low,
                 f"low end of the {tier.name} range: {profile.ram.available_gb:.1f} GB free RAM and no GPU")]


def choose_model_and_batch(profile: Profile, dev: DeviceChoice) -> tuple[ModelChoice, list[Decision]]:
    """GPU: the lower of the RAM and VRAM tiers, batch from GPU measurements (else the tier's).
    CPU: from the measured throughput when there is any, else the lower of the RAM and cores tiers."""
    if dev.gpu is not None:
        return _choose_gpu_model_and_batch(profile, dev)
    return _choose_cpu_model_and_batch(profile)


# ---------------------------------------------------------------------------------------------
# learning cadence and optimisation level
# ---------------------------------------------------------------------------------------------
def choose_cadence(model: ModelChoice, dev: DeviceChoice) -> list[Decision]:
    """Gradient accumulation (memory-starved machines reach an effective batch of 64) and the
    train frequency that keeps ``REPLAY_RATIO`` gradient samples per transition."""
    batch = model.batch_size
    if model.tier_index == 0 or dev.conserve:
        accum = max(1, EFFECTIVE_BATCH_FLOOR // batch)
        why = (f"{'budget tier' if model.tier_index == 0 else 'GPU memory conserve'}: {batch} x {accum} = "
               f"effective batch {batch * accum} without the memory of one")
    else:
        accum, why = 1, f"batch {batch} already fits in memory"
    effective = batch * accum
    return [Decision("gradient_accumulation_steps", accum, why),
            Decision("train_frequency", max(1, effective // REPLAY_RATIO),
                     f"{effective} gradient samples per learning step / replay ratio {REPLAY_RATIO} "
                     "= same samples per transition on every machine")]


def choose_optimization_level(model: ModelChoice, dev: DeviceChoice) -> Decision:
    """cpu_optimize, gpu_conserve, max_performance (GPU at the high tier or above) or balanced."""
    if dev.gpu is None:
        return Decision("optimization_level", "cpu_optimize", "no usable GPU: threads and vectorised envs on the CPU")
    if dev.conserve:
        return Decision("optimization_level", "gpu_conserve",
                        f"{dev.vram_gb:g} GB VRAM < {GPU_CONSERVE_VRAM_GB} GB: small batches, accumulation")
    if model.tier_index >= 3:
        return Decision("optimization_level", "max_performance", f"{model.tier.name} GPU and RAM")
    return Decision("optimization_level", "balanced", f"{model.tier.name} hardware")


# ---------------------------------------------------------------------------------------------
# replay buffer
# ---------------------------------------------------------------------------------------------
def _buffer_cap(profile: Profile, dev: DeviceChoice) -> tuple[float, str]:
    """Bytes the replay may take (25% of free RAM, or of free VRAM when that is less) and why."""
    avail = profile.ram.available_gb
    cap_bytes, source = BUFFER_MEMORY_FRACTION * avail * GB, f"25% of {avail:.1f} GB free RAM"
    if dev.gpu is not None and not dev.unified:
        vram_free = float(dev.gpu.vram_free_gb or dev.vram_gb)
        if BUFFER_MEMORY_FRACTION * vram_free * GB < cap_bytes:
            cap_bytes, source = BUFFER_MEMORY_FRACTION * vram_free * GB, f"25% of {vram_free:.1f} GB free VRAM"
    return cap_bytes, source


def choose_buffer(profile: Profile, dev: DeviceChoice, model: ModelChoice, effective_batch: int,
                  train_frequency: int) -> list[Decision]:
    """Buffer size and state dtype within the memory cap, the RAM reserve, learning starts and the
    target refresh interval (both follow from the buffer and the cadence)."""
    total, avail = profile.ram.total_gb, profile.ram.available_gb
    r_tier, a_tier = ram_tier(total), available_tier(avail)
    pair_cap = 4 if model.model_size == "xlarge" else 3
    b_tier = min(r_tier, a_tier, pair_cap)
    target = TIERS[b_tier].buffer_size
    cap_bytes, cap_src = _buffer_cap(profile, dev)
    limits = []
    if b_tier < r_tier and b_tier == a_tier:
        limits.append(f"only {avail:.1f} GB RAM available now")
    if b_tier == pair_cap and pair_cap < min(r_tier, a_tier):
        limits.append("500K is kept for the xlarge model")
    dtype, buffer = "float32", target
    if target * bytes_per_transition(STATE_SIZE, "float32") > cap_bytes:
        dtype = "float16"
        if target * bytes_per_transition(STATE_SIZE, "float16") > cap_bytes:
            fit = int(cap_bytes // bytes_per_transition(STATE_SIZE, "float16"))
            buffer = fit // 1000 * 1000 if fit >= 1000 else fit
            limits.append(f"capped to {cap_src}")
    if buffer < 2 * effective_batch:
        raise ConfigError(f"not enough memory to train: {cap_src} holds only {buffer} transitions")
    per_transition = bytes_per_transition(STATE_SIZE, dtype)
    reserve = round(min(2.0, max(0.5, 0.1 * total)), 2)
    return [
        Decision("buffer_size", buffer, f"{TIERS[b_tier].name} buffer for {_ram_text(profile)}"
                 + (f" ({'; '.join(limits)})" if limits else "")
                 + f"; {buffer * per_transition / 1e6:.1f} MB at {per_transition} B/transition"),
        Decision("replay_state_dtype", dtype,
                 "float32 states fit within " + cap_src if dtype == "float32"
                 else f"float32 states would exceed {cap_src}: half-size states first"),
        Decision("memory_reserve_gb", reserve,
                 f"10% of {total:g} GB RAM (0.5-2 GB) kept free while the buffer grows"),
        Decision("learning_starts", max(2 * effective_batch, min(LEARNING_STARTS_TRANSITIONS, buffer // 2)),
                 "transitions collected before learning: ~3 episodes of data, at most half the buffer"),
        Decision("target_update_interval", max(1, round(TARGET_REFRESH_TRANSITIONS / train_frequency)),
                 f"learning steps = ~{TARGET_REFRESH_TRANSITIONS:,} transitions between target refreshes "
                 f"at train_frequency {train_frequency}"),
    ]


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------
def choose_precision(dev: DeviceChoice) -> list[Decision]:
    """bf16 where the card runs it natively, fp16 on tensor cores without bf16, else fp32."""
    card = dev.gpu
    if card is None:
        precision, why = "fp32", "CPU: 16-bit autocast is slower than fp32 for these small MLPs"
    elif dev.backend == "mps":
        precision, why = "fp32", "Apple MPS: fp16 autocast is not yet dependable enough to gain on small MLPs"
    elif card.bf16:
        precision, why = "bf16", f"{card.name} runs bf16 natively (fp32 range, no loss scaler)"
    elif card.tensor_cores:
        precision, why = "fp16", f"{card.name} has tensor cores (fp16 with a gradient scaler)"
    else:
        cc = card.compute_capability
        precision, why = "fp32", (f"{card.name} has no tensor cores"
                                  + (f" (CC {cc[0]}.{cc[1]})" if cc else "") + ": fp16 would not be faster")
    return [Decision("use_mixed_precision", precision != "fp32", why), Decision("precision", precision, why)]


# ---------------------------------------------------------------------------------------------
# threads and environments
# ---------------------------------------------------------------------------------------------
def choose_threads(profile: Profile, dev: DeviceChoice, model: ModelChoice) -> Decision:
    """Torch intra-op threads. CPU: the count that ran the planned setting fastest in the real loop
    (else the physical cores this process may use). GPU: half the physical cores for the host side,
    at most 16."""
    cpu = profile.cpu
    usable, physical = cpu.usable_cores, min(cpu.physical_cores, cpu.logical_cores)
    if dev.gpu is not None:
        workers = max(1, min(16, physical // 2, usable))
        return Decision("num_workers", workers,
                        f"the network runs on the GPU; {workers} CPU threads for the host side (replay indices, "
                        f"copies) (half of {physical} physical cores, at most 16, {usable} usable)")
    measured = {t: r for t, r in profile.benchmarks.by_threads("cpu", model.model_size, model.batch_size).items()
                if t <= usable}
    if measured:
        # Threads that outnumber the idle cores wait on each other at every layer (on a loaded machine);
        # only the real loop shows it (a bare update benchmark hardly did), so the measurement decides.
        workers = max(measured, key=lambda t: (measured[t], -t))
        rates = ", ".join(f"{t}: {rate:,.0f}" for t, rate in sorted(measured.items()))
        return Decision("num_workers", workers, f"{workers} torch thread(s): fastest for {model.model_size} at "
                        f"batch {model.batch_size} in the real training loop (threads: transitions/s {rates})")
    workers = cpu.compute_cores
    return Decision("num_workers", workers,
                    f"{workers} torch threads = physical cores this process may use ({usable} usable)")


def choose_parallel_envs(dev: DeviceChoice, model: ModelChoice, train_frequency: int) -> Decision:
    """Accounts stepped together as arrays in one thread: enough that one vector step feeds about
    one learning step; thousands on a data-centre GPU."""
    if dev.gpu is None:
        envs = min(64, max(16, train_frequency))
        why = (f"one vector step ~ one learning step ({train_frequency} transitions), 16-64; "
               "vectorised in one thread, so no extra cores")
    elif dev.conserve:
        envs = max(8, min(64, train_frequency))
        why = f"weak GPU: {envs} envs per step as tensors on the GPU (one thread), small batches"
    elif dev.vram_gb >= DATACENTRE_VRAM_GB:
        envs = min(4096, max(256, _pow2_floor(8 * dev.vram_gb), train_frequency))
        why = f"data-centre GPU with {dev.vram_gb:g} GB: wide vector env keeps it fed (one thread)"
    elif model.source == "gpu-measured":
        envs = min(4096, max(4, train_frequency))
        why = (f"one vector step feeds one learning step ({train_frequency} transitions) at the measured "
               "batch, as tensors on the GPU (one thread)")
    else:
        envs = 4
        why = "consumer GPU: 4 vectorised envs (the guide's enthusiast setting), one thread"
    return Decision("parallel_envs", envs, why)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def choose_compression(profile: Profile, model: ModelChoice) -> Decision:
    """Compress checkpoints on the budget tier, on a nearly full disk, and on slow (HDD, network) storage."""
    free, kind = profile.storage.free_gb, profile.storage.kind
    if model.tier_index == 0:
        return Decision("checkpoint_compression", True, "budget tier: smaller checkpoints")
    if free is not None and free < 10:
        return Decision("checkpoint_compression", True, f"only {free:g} GB free disk")
    if kind in ("hdd", "network"):
        return Decision("checkpoint_compression", True, f"{kind} storage: fewer bytes to write beats the CPU cost")
    return Decision("checkpoint_compression", False, "plenty of fast disk: skip the compression CPU cost")


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
def plan_training(profile: Profile | dict[str, Any]) -> tuple[TrainingConfig, list[Decision]]:
    """Plan every hardware-dependent setting from a profile (a partial dict is read with defaults)."""
    p = profile if isinstance(profile, Profile) else Profile.from_dict(profile)
    dev, device = choose_device(p)
    model, model_decisions = choose_model_and_batch(p, dev)
    cadence = choose_cadence(model, dev)
    accumulation, train_frequency = cadence[0].value, cadence[1].value
    decisions = [device, *model_decisions, *cadence, choose_optimization_level(model, dev),
                 *choose_buffer(p, dev, model, model.batch_size * accumulation, train_frequency),
                 *choose_precision(dev), choose_threads(p, dev, model),
                 choose_parallel_envs(dev, model, train_frequency), choose_compression(p, model)]
    config = TrainingConfig().with_overrides({d.key: d.value for d in decisions})
    return config, decisions

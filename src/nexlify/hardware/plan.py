"""The training plan: a pure function from a hardware profile dict to a ``TrainingConfig`` plus reasons.

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
                            tier's that trains the standard run within GPU_PLAN_TIME_BUDGET_S;
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

import copy
import math
from dataclasses import dataclass
from typing import Any

from nexlify.config import MODEL_SIZES, TrainingConfig, replay_bytes_per_transition
from nexlify.errors import ConfigError

GB = float(1 << 30)
REPLAY_RATIO = 8  # gradient samples per collected transition, identical on every machine
STANDARD_EPISODES = 1000
STEPS_PER_EPISODE = 3000
STANDARD_TRANSITIONS = STANDARD_EPISODES * STEPS_PER_EPISODE
PLAN_TIME_BUDGET_S = 600.0  # CPU plans pick the largest model that trains the standard run in this
# GPU plans with measurements take the smallest measured batch (the most learning steps) that still
# trains the standard run in this; a data-centre card reaches it at a few thousand samples a batch.
GPU_PLAN_TIME_BUDGET_S = 60.0
# Real training runs slower than the profiler's bare update benchmark: replay sampling, Double-DQN's
# extra forward, gradient clipping, target updates, acting and env steps. Calibrated on a 2-core
# x86 box (docs/benchmarks.md): agent_speed's learn() gave 1.7-2.3x fewer samples/s than the
# profile's numbers, and a 1000-episode run with the large model took 1.74x its bare-update time.
ACTING_OVERHEAD = 2.2
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
# helpers shared with the benchmark
# ---------------------------------------------------------------------------------------------

def _canonical_vendor(name: str | None) -> str | None:
    """'nvidia', 'NVIDIA Corporation', 'amd', 'Apple' -> NVIDIA / AMD / Apple (profiles are hand-written too)."""
    if not name:
        return None
    lowered = str(name).lower()
    for key, canonical in (("nvidia", "NVIDIA"), ("amd", "AMD"), ("advanced micro", "AMD"), ("apple", "Apple")):
        if key in lowered:
            return canonical
    return str(name)

def bytes_per_transition(state_size: int = 12, state_dtype: str = "float32") -> int:
    """Replay bytes per transition, as the replay memory itself counts them (one place for the fact)."""
    return replay_bytes_per_transition(state_size, state_dtype)


def projected_training_seconds(samples_per_s: float, transitions: int = STANDARD_TRANSITIONS,
                               replay_ratio: float = REPLAY_RATIO) -> float:
    """Projected wall time of the standard run from a measured update throughput."""
    if samples_per_s <= 0:
        return math.inf
    return transitions * replay_ratio / samples_per_s * ACTING_OVERHEAD


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


# ---------------------------------------------------------------------------------------------
# profile completion
# ---------------------------------------------------------------------------------------------
def _complete_device(dev: dict[str, Any], backend: str | None, total_ram_gb: float) -> dict[str, Any]:
    from nexlify.hardware.profile import amd_matrix_support, nvidia_tensor_cores

    d = dict(dev)
    vendor = _canonical_vendor(d.get("vendor")) or {"rocm": "AMD", "mps": "Apple"}.get(backend or "", "NVIDIA")
    d["vendor"] = vendor
    d.setdefault("name", f"{vendor} GPU")
    cc = d.get("compute_capability")
    d["compute_capability"] = [int(cc[0]), int(cc[1])] if cc else None
    if d.get("vram_gb") is None:
        # Unified memory (Apple): Metal gives the GPU about three quarters of RAM.
        d["vram_gb"] = round(0.75 * total_ram_gb, 2) if vendor == "Apple" else 0.0
    d["vram_gb"] = float(d["vram_gb"])
    if d.get("vram_free_gb") is None:
        d["vram_free_gb"] = round(0.9 * d["vram_gb"], 2)
    if vendor == "NVIDIA":
        d.setdefault("tensor_cores", nvidia_tensor_cores(d["name"], d["compute_capability"]))
        d.setdefault("bf16", bool(cc) and int(cc[0]) >= 8)
    elif vendor == "AMD":
        tensor, bf16 = amd_matrix_support(d.get("arch"), d["compute_capability"])
        d.setdefault("tensor_cores", tensor)
        d.setdefault("bf16", bf16)
    else:
        d.setdefault("tensor_cores", False)
        d.setdefault("bf16", False)
    if vendor == "Apple":
        d.setdefault("unified_memory", True)
    d.setdefault("multiprocessors", None)
    return d


def complete_profile(partial: dict[str, Any]) -> dict[str, Any]:
    """Fill a partial profile with defaults so the planner can read every key (input untouched).

    Defaults: logical = physical = usable cores (1 when nothing is known); available RAM = 75% of
    total; free VRAM = 90% of total; tensor cores and bf16 from the card name and compute
    capability; a GPU given only by top-level keys (vendor, name, vram_gb, ...) becomes devices[0].
    """
    p = copy.deepcopy(dict(partial or {}))
    cpu = dict(p.get("cpu") or {})
    logical = int(cpu.get("logical_cores") or cpu.get("physical_cores") or cpu.get("usable_cores") or 1)
    cpu["logical_cores"] = logical
    cpu["physical_cores"] = int(cpu.get("physical_cores") or logical)
    cpu["usable_cores"] = max(1, min(int(cpu.get("usable_cores") or logical), logical))
    cpu.setdefault("brand", "unknown")
    cpu.setdefault("architecture", "unknown")
    cpu.setdefault("max_freq_mhz", None)
    cpu.setdefault("simd", {})
    p["cpu"] = cpu

    ram = dict(p.get("ram") or {})
    total = float(ram.get("total_gb") or 8.0)
    ram["total_gb"] = total
    avail = ram.get("available_gb")
    ram["available_gb"] = float(min(total, 0.75 * total if avail is None else avail))
    ram.setdefault("limit_gb", None)
    p["ram"] = ram

    gpu = dict(p.get("gpu") or {})
    devices = [dict(d) for d in gpu.get("devices") or []]
    if not devices and gpu.get("available") and (gpu.get("name") or gpu.get("vram_gb") is not None
                                                 or gpu.get("backend") == "mps"):
        devices = [{k: gpu[k] for k in ("vendor", "name", "vram_gb", "vram_free_gb", "compute_capability",
                                         "tensor_cores", "bf16", "multiprocessors", "arch") if k in gpu}]
    backend = gpu.get("backend")
    if devices and backend is None:
        vendor = _canonical_vendor(devices[0].get("vendor")) or "NVIDIA"
        backend = {"AMD": "rocm", "Apple": "mps"}.get(vendor, "cuda")
    devices = [_complete_device(d, backend, total) for d in devices]
    gpu["devices"] = devices
    gpu["available"] = bool(gpu.get("available", bool(devices))) and bool(devices)
    gpu["backend"] = backend if gpu["available"] else None
    gpu["count"] = len(devices)
    gpu["unusable_devices"] = list(gpu.get("unusable_devices") or [])
    first = devices[0] if devices else {}
    for key in ("vendor", "name", "vram_gb", "vram_free_gb", "compute_capability", "tensor_cores", "bf16"):
        gpu[key] = first.get(key)
    p["gpu"] = gpu

    storage = dict(p.get("storage") or {})
    storage.setdefault("free_gb", None)
    storage.setdefault("total_gb", None)
    storage.setdefault("kind", "unknown")
    p["storage"] = storage
    p["benchmarks"] = dict(p.get("benchmarks") or {})
    p["environment"] = dict(p.get("environment") or {})
    return p


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
def _pick_gpu(gpu: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """Index and entry of the usable GPU with the most VRAM (first wins ties)."""
    if not gpu.get("available") or not gpu["devices"]:
        return None
    idx, dev = max(enumerate(gpu["devices"]), key=lambda item: (item[1]["vram_gb"], -item[0]))
    if vram_tier(dev["vram_gb"]) is None:
        return None
    return idx, dev


def _cpu_benchmark_choice(profile: dict[str, Any], max_tier: int) -> tuple[str, int, float, bool] | None:
    """(model, batch, projected seconds, fits budget) from measured CPU update throughput."""
    table = ((profile["benchmarks"].get("update_throughput") or {}).get("cpu")) or {}
    options: list[tuple[int, str, int, float]] = []
    for size in MODEL_SIZES[: max_tier + 1]:
        for batch, rate in (table.get(size) or {}).items():
            try:
                b, r = int(batch), float(rate)
            except (TypeError, ValueError):
                continue
            if b >= 1 and r > 0:
                options.append((MODEL_SIZES.index(size), size, b, projected_training_seconds(r)))
    if not options:
        return None
    fitting = [o for o in options if o[3] <= PLAN_TIME_BUDGET_S]
    if fitting:
        best_size = max(o[0] for o in fitting)
        _, size, batch, secs = min((o for o in fitting if o[0] == best_size), key=lambda o: o[3])
        return size, batch, secs, True
    _, size, batch, secs = min(options, key=lambda o: (o[0], o[3]))
    return size, batch, secs, False


def _gpu_benchmark_choice(profile: dict[str, Any], backend: str | None, model: str,
                          min_batch: int) -> tuple[int, float, str] | None:
    """(batch, projected seconds, how) from the GPU's measured update throughput for ``model``.

    Bigger batches keep a GPU busier but, at a fixed replay ratio, mean fewer learning steps; so the
    smallest batch (at least the tier's) that fits the GPU time budget wins (how = "measured"). When
    none measured fits and the profiler did not get to the larger benchmark batches (out of time),
    those are extrapolated from the largest measured one at the same time per step, the most a
    bigger batch can gain (how = "extrapolated"). Else the fastest measured (how = "fastest").
    """
    key = "mps" if backend == "mps" else "cuda"
    benchmarks = profile["benchmarks"]
    row = (((benchmarks.get("update_throughput") or {}).get(key)) or {}).get(model) or {}
    rates: dict[int, float] = {}
    for batch, rate in row.items():
        try:
            b, r = int(batch), float(rate)
        except (TypeError, ValueError):
            continue
        if b >= min_batch and r > 0:
            rates[b] = r
    if not rates:
        return None
    fitting = sorted(b for b, r in rates.items() if projected_training_seconds(r) <= GPU_PLAN_TIME_BUDGET_S)
    if fitting:
        return fitting[0], projected_training_seconds(rates[fitting[0]]), "measured"
    largest = max(rates)
    for b in sorted(int(x) for x in benchmarks.get("gpu_batch_sizes") or [] if int(x) > largest):
        secs = projected_training_seconds(rates[largest] * b / largest)
        if secs <= GPU_PLAN_TIME_BUDGET_S:
            return b, secs, "extrapolated"
    batch = max(rates, key=lambda b: rates[b])
    return batch, projected_training_seconds(rates[batch]), "fastest"


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def plan_training(profile: dict[str, Any]) -> tuple[TrainingConfig, list[Decision]]:
    """Plan every hardware-dependent setting from a (possibly partial) profile; see the module table."""
    p = complete_profile(profile)
    cpu, ram, gpu, storage = p["cpu"], p["ram"], p["gpu"], p["storage"]
    usable, physical = cpu["usable_cores"], min(cpu["physical_cores"], cpu["logical_cores"])
    total, avail = ram["total_gb"], ram["available_gb"]
    decisions: list[Decision] = []

    def decide(key: str, value: Any, reason: str) -> Any:
        decisions.append(Decision(key, value, reason))
        return value

    r_tier = ram_tier(total)
    ram_txt = f"{total:g} GB RAM ({avail:.1f} GB free)"
    picked = _pick_gpu(gpu)

    # --- device --------------------------------------------------------------------------
    if picked is not None:
        idx, dev = picked
        vram = dev["vram_gb"]
        unified = bool(dev.get("unified_memory")) or gpu["backend"] == "mps"
        device = "mps" if gpu["backend"] == "mps" else ("cuda" if idx == 0 else f"cuda:{idx}")
        via = {"rocm": " via ROCm (torch calls it cuda)", "mps": " via Metal (MPS)"}.get(gpu["backend"], "")
        decide("device", device, f"{dev['name']} with {vram:g} GB "
               f"{'unified memory' if unified else 'VRAM'}{via}")
    else:
        dev, vram, unified = None, 0.0, False
        device = "cpu"
        if gpu.get("unusable_devices"):
            bad = gpu["unusable_devices"][0]
            why = f"{bad.get('name', 'GPU')} found but unusable: {bad.get('reason', 'unknown reason')}"
        elif gpu.get("available") and gpu["devices"]:
            why = f"{gpu['devices'][0]['name']} has under {GPU_MIN_VRAM_GB} GB VRAM, the CPU is the safer bet"
        else:
            why = "no GPU that torch can use"
        decide("device", device, why)

    conserve = dev is not None and not unified and vram < GPU_CONSERVE_VRAM_GB

    # --- model and batch ----------------------------------------------------------------
    bench_choice = None
    gpu_choice: tuple[int, float, str] | None = None
    if dev is not None:
        v_tier = vram_tier(vram) or 1
        tier_idx = min(r_tier, v_tier)
        tier = TIERS[tier_idx]
        gpu_mem = "unified memory" if unified else "VRAM"
        limiter = ("both agree" if r_tier == v_tier
                   else f"the {'RAM' if r_tier < v_tier else gpu_mem} limits")
        model = decide("model_size", tier.model_size,
                       f"{tier.name} tier: {ram_txt} -> {TIERS[r_tier].name}, {vram:g} GB "
                       f"{gpu_mem} -> {TIERS[v_tier].name}; {limiter}")
        gpu_choice = None if conserve else _gpu_benchmark_choice(p, gpu["backend"], model, tier.batch_high)
        if conserve:
            batch = decide("batch_size", tier.batch_low,
                           f"low end of the {tier.name} range: only {vram:g} GB VRAM (GPU limited)")
        elif gpu_choice is not None:
            batch_g, secs, how = gpu_choice
            within = f"trains {STANDARD_EPISODES} episodes of {model} within {GPU_PLAN_TIME_BUDGET_S:.0f} s on the GPU"
            why = {"measured": f"smallest measured batch that {within} (~{secs:.0f} s projected)",
                   "extrapolated": f"smallest benchmark batch that {within} (~{secs:.0f} s, extrapolated from a "
                                   "smaller measured batch: the profiler ran out of time)",
                   "fastest": f"fastest measured batch for {model} on the GPU (~{secs:.0f} s projected for "
                              f"{STANDARD_EPISODES} episodes)"}[how]
            batch = decide("batch_size", batch_g, why)
        else:
            batch = decide("batch_size", tier.batch_high,
                           f"high end of the {tier.name} range: {vram:g} GB on the GPU holds it comfortably")
    else:
        if r_tier >= 1:
            bench_choice = _cpu_benchmark_choice(p, r_tier)
        if bench_choice is not None:
            size, batch_b, secs, fits = bench_choice
            tier_idx = MODEL_SIZES.index(size)
            tier = TIERS[tier_idx]
            if fits:
                why = (f"largest model (RAM allows up to {TIERS[r_tier].model_size}) whose measured CPU "
                       f"update speed trains {STANDARD_EPISODES} episodes in ~{secs / 60:.0f} min "
                       f"(budget {PLAN_TIME_BUDGET_S / 60:.0f} min)")
            else:
                why = (f"no model fits the {PLAN_TIME_BUDGET_S / 60:.0f} min budget on this CPU; "
                       f"the smallest projects ~{secs / 60:.0f} min for {STANDARD_EPISODES} episodes")
            model = decide("model_size", size, why)
            threads = p["benchmarks"].get("threads") or usable
            batch = decide("batch_size", batch_b, f"fastest measured batch for {size} with "
                           f"{threads} torch thread(s) (~{secs / 60:.1f} min projected)")
        else:
            c_tier = cores_tier(usable)
            tier_idx = min(r_tier, c_tier)
            tier = TIERS[tier_idx]
            limiter = ("both agree" if r_tier == c_tier
                       else f"the {'RAM' if r_tier < c_tier else 'CPU'} limits")
            model = decide("model_size", tier.model_size,
                           f"{tier.name} tier: {ram_txt} -> {TIERS[r_tier].name}, {usable} usable cores and "
                           f"no GPU -> {TIERS[c_tier].name}; {limiter} (no benchmark data)")
            batch = decide("batch_size", tier.batch_low,
                           f"low end of the {tier.name} range: {avail:.1f} GB free RAM and no GPU")

    # --- accumulation and learning cadence ------------------------------------------------
    if tier_idx == 0 or conserve:
        accum = max(1, EFFECTIVE_BATCH_FLOOR // batch)
        why = (f"{'budget tier' if tier_idx == 0 else 'GPU memory conserve'}: {batch} x {accum} = "
               f"effective batch {batch * accum} without the memory of one")
    else:
        accum = 1
        why = f"batch {batch} already fits in memory"
    decide("gradient_accumulation_steps", accum, why)
    effective = batch * accum
    train_frequency = decide("train_frequency", max(1, effective // REPLAY_RATIO),
                             f"{effective} gradient samples per learning step / replay ratio {REPLAY_RATIO} "
                             "= same samples per transition on every machine")

    # --- optimization level ----------------------------------------------------------------
    if dev is None:
        level, why = "cpu_optimize", "no usable GPU: threads and vectorised envs on the CPU"
    elif conserve:
        level = "gpu_conserve"
        why = f"{vram:g} GB VRAM < {GPU_CONSERVE_VRAM_GB} GB: small batches, accumulation"
    elif tier_idx >= 3:
        level, why = "max_performance", f"{tier.name} GPU and RAM"
    else:
        level, why = "balanced", f"{tier.name} hardware"
    decide("optimization_level", level, why)

    # --- replay buffer ---------------------------------------------------------------------
    a_tier = available_tier(avail)
    pair_cap = 4 if model == "xlarge" else 3
    b_tier = min(r_tier, a_tier, pair_cap)
    target = TIERS[b_tier].buffer_size
    cap_bytes = BUFFER_MEMORY_FRACTION * avail * GB
    cap_src = f"25% of {avail:.1f} GB free RAM"
    if dev is not None and not unified:
        vram_free = float(dev.get("vram_free_gb") or vram)
        if BUFFER_MEMORY_FRACTION * vram_free * GB < cap_bytes:
            cap_bytes = BUFFER_MEMORY_FRACTION * vram_free * GB
            cap_src = f"25% of {vram_free:.1f} GB free VRAM"
    limits = []
    if b_tier < r_tier and b_tier == a_tier:
        limits.append(f"only {avail:.1f} GB RAM available now")
    if b_tier == pair_cap and pair_cap < min(r_tier, a_tier):
        limits.append("500K is kept for the xlarge model")
    dtype = "float32"
    buffer = target
    if target * bytes_per_transition(12, "float32") > cap_bytes:
        dtype = "float16"
        if target * bytes_per_transition(12, "float16") > cap_bytes:
            fit = int(cap_bytes // bytes_per_transition(12, "float16"))
            buffer = fit // 1000 * 1000 if fit >= 1000 else fit
            limits.append(f"capped to {cap_src}")
    if buffer < 2 * effective:
        raise ConfigError(f"not enough memory to train: {cap_src} holds only {buffer} transitions")
    used_mb = buffer * bytes_per_transition(12, dtype) / 1e6
    decide("buffer_size", buffer, f"{TIERS[b_tier].name} buffer for {ram_txt}"
           + (f" ({'; '.join(limits)})" if limits else "")
           + f"; {used_mb:.1f} MB at {bytes_per_transition(12, dtype)} B/transition")
    decide("replay_state_dtype", dtype,
           "float32 states fit within " + cap_src if dtype == "float32"
           else f"float32 states would exceed {cap_src}: half-size states first")
    reserve = round(min(2.0, max(0.5, 0.1 * total)), 2)
    decide("memory_reserve_gb", reserve,
           f"10% of {total:g} GB RAM (0.5-2 GB) kept free while the buffer grows")
    decide("learning_starts", max(2 * effective, min(LEARNING_STARTS_TRANSITIONS, buffer // 2)),
           "transitions collected before learning: ~3 episodes of data, at most half the buffer")
    decide("target_update_interval", max(1, round(TARGET_REFRESH_TRANSITIONS / train_frequency)),
           f"learning steps = ~{TARGET_REFRESH_TRANSITIONS:,} transitions between target refreshes "
           f"at train_frequency {train_frequency}")

    # --- precision -------------------------------------------------------------------------
    if dev is None:
        precision, why = "fp32", "CPU: 16-bit autocast is slower than fp32 for these small MLPs"
    elif gpu["backend"] == "mps":
        precision, why = "fp32", "Apple MPS: fp16 autocast is not yet dependable enough to gain on small MLPs"
    elif dev.get("bf16"):
        precision, why = "bf16", f"{dev['name']} runs bf16 natively (fp32 range, no loss scaler)"
    elif dev.get("tensor_cores"):
        precision, why = "fp16", f"{dev['name']} has tensor cores (fp16 with a gradient scaler)"
    else:
        cc = dev.get("compute_capability")
        precision, why = "fp32", (f"{dev['name']} has no tensor cores"
                                  + (f" (CC {cc[0]}.{cc[1]})" if cc else "") + ": fp16 would not be faster")
    decide("use_mixed_precision", precision != "fp32", why)
    decide("precision", precision, why)

    # --- threads and environments -------------------------------------------------------------
    measured_threads = p["benchmarks"].get("threads") if bench_choice is not None else None
    if dev is None and isinstance(measured_threads, int) and 1 <= measured_threads < min(physical, usable):
        # The benchmark found fewer threads faster (a loaded machine: OpenMP threads wait on each
        # other), and its throughput numbers, hence the model choice, hold at that thread count.
        workers = measured_threads
        why = (f"{workers} torch thread(s): measured faster than {min(physical, usable)} on this "
               f"machine ({usable} usable cores)")
    elif dev is None:
        workers = max(1, min(physical, usable))
        why = f"{workers} torch threads = physical cores this process may use ({usable} usable)"
    else:
        workers = max(1, min(16, physical // 2, usable))
        why = (f"the network runs on the GPU; {workers} CPU threads for the host side (replay indices, "
               f"copies) (half of {physical} physical cores, at most 16, {usable} usable)")
    decide("num_workers", workers, why)
    if dev is None:
        envs = min(64, max(16, train_frequency))
        why = (f"one vector step ~ one learning step ({train_frequency} transitions), 16-64; "
               "vectorised in one thread, so no extra cores")
    elif conserve:
        envs = max(8, min(64, train_frequency))
        why = f"weak GPU: {envs} envs per step as tensors on the GPU (one thread), small batches"
    elif vram >= DATACENTRE_VRAM_GB:
        envs = min(4096, max(256, _pow2_floor(8 * vram), train_frequency))
        why = f"data-centre GPU with {vram:g} GB: wide vector env keeps it fed (one thread)"
    elif gpu_choice is not None:
        envs = min(4096, max(4, train_frequency))
        why = (f"one vector step feeds one learning step ({train_frequency} transitions) at the measured "
               "batch, as tensors on the GPU (one thread)")
    else:
        envs = 4
        why = "consumer GPU: 4 vectorised envs (the guide's enthusiast setting), one thread"
    decide("parallel_envs", envs, why)

    free = storage.get("free_gb")
    kind = storage.get("kind")
    if tier_idx == 0:
        comp, why = True, "budget tier: smaller checkpoints"
    elif free is not None and free < 10:
        comp, why = True, f"only {free:g} GB free disk"
    elif kind in ("hdd", "network"):
        comp, why = True, f"{kind} storage: fewer bytes to write beats the CPU cost"
    else:
        comp, why = False, "plenty of fast disk: skip the compression CPU cost"
    decide("checkpoint_compression", comp, why)

    values = {d.key: d.value for d in decisions}
    config = TrainingConfig().with_overrides(values)
    return config, decisions
